/*
 * ini settings back to the bootstrap's values after every request (part
 * of ppm's SAPI, see sapi.c).
 */
#include "sapi_parts.h"

#include "php.h"
#include "zend_ini.h"

/* ini as the bootstrap left it: name => value (string) or null. */
static HashTable *snapshot;

void ppm_ini_snapshot(void)
{
    ALLOC_HASHTABLE(snapshot);
    zend_hash_init(snapshot, 8, NULL, ZVAL_PTR_DTOR, 0);
    if (EG(modified_ini_directives)) {
        zend_string *name;
        zend_ini_entry *entry;
        ZEND_HASH_FOREACH_STR_KEY_PTR(EG(modified_ini_directives), name, entry) {
            zval value;
            if (entry->value) {
                ZVAL_STR_COPY(&value, entry->value);
            } else {
                ZVAL_NULL(&value);
            }
            zend_hash_add(snapshot, name, &value);
        } ZEND_HASH_FOREACH_END();
    }
}

void ppm_ini_free(void)
{
    if (snapshot) {
        zend_hash_destroy(snapshot);
        FREE_HASHTABLE(snapshot);
        snapshot = NULL;
    }
}

/* Where sessions are stored is set by frameworks when they build their
 * session handler object (Symfony's NativeFileSessionHandler calls
 * ini_set() in its constructor), and that object lives as long as the
 * worker, not one request: reverted, the next request on this worker
 * would read sessions from PHP's default path and lose them. So a request
 * that changes these becomes the baseline, except the "user" handler,
 * whose callbacks PHP drops at the end of every request. No user data is
 * in either setting. */
static int adopted(const zend_string *name, const zend_ini_entry *entry)
{
    if (zend_string_equals_literal(name, "session.save_path")) {
        return 1;
    }
    return zend_string_equals_literal(name, "session.save_handler") && entry->value &&
           !zend_string_equals_literal(entry->value, "user");
}

/* At the deactivate stage: the runtime stage is refused by some handlers
 * once headers are sent (session.save_handler, for one). */
void ppm_ini_restore(void)
{
    if (!EG(modified_ini_directives) || !snapshot) {
        return;
    }
    uint32_t n = zend_hash_num_elements(EG(modified_ini_directives)), changed = 0;
    if (n == 0) {
        return;
    }
    zend_string **names = emalloc(n * sizeof(*names));
    zend_string *name;
    zend_ini_entry *entry;
    ZEND_HASH_FOREACH_STR_KEY_PTR(EG(modified_ini_directives), name, entry) {
        zval *saved = zend_hash_find(snapshot, name);
        if (adopted(name, entry)) {
            zval value;
            if (entry->value) {
                ZVAL_STR_COPY(&value, entry->value);
            } else {
                ZVAL_NULL(&value);
            }
            zend_hash_update(snapshot, name, &value);
            continue;
        }
        if (saved && Z_TYPE_P(saved) == IS_STRING && entry->value &&
            zend_string_equals(Z_STR_P(saved), entry->value)) {
            continue;
        }
        if (saved && Z_TYPE_P(saved) == IS_NULL && !entry->value) {
            continue;
        }
        names[changed++] = zend_string_copy(name);
    } ZEND_HASH_FOREACH_END();
    for (uint32_t i = 0; i < changed; i++) {
        zval *saved = zend_hash_find(snapshot, names[i]);
        if (saved && Z_TYPE_P(saved) == IS_STRING) {
            zend_alter_ini_entry_ex(names[i], Z_STR_P(saved), ZEND_INI_USER, ZEND_INI_STAGE_DEACTIVATE, 1);
        } else {
            zend_restore_ini_entry(names[i], ZEND_INI_STAGE_DEACTIVATE);
        }
        zend_string_release(names[i]);
    }
    efree(names);
}


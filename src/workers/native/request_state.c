/*
 * Per-request state beside the SAPI's core (part of ppm's SAPI, see
 * sapi.c). A worker cannot run every module's RINIT and RSHUTDOWN per
 * request: they would undo what the bootstrap set up. Session and
 * filter's are run whole (their state is only the request's); of others,
 * the request's part is reset here. Also: error_get_last(), and the files
 * PHP loaded, for the master's reloads.
 */
#include "sapi.h"
#include "sapi_parts.h"

#include <stddef.h>

#include "php.h"
/* libmbfl's inline helpers compare signed with unsigned; ours do not. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#include "ext/mbstring/mbstring.h"
#pragma GCC diagnostic pop

static zend_module_entry *find_module(const char *name)
{
    return zend_hash_str_find_ptr(&module_registry, name, strlen(name));
}

void ppm_call_module(const char *name, int startup)
{
    zend_module_entry *m = find_module(name);
    if (!m) {
        return;
    }
    if (startup && m->request_startup_func) {
        m->request_startup_func(m->type, m->module_number);
    } else if (!startup && m->request_shutdown_func) {
        m->request_shutdown_func(m->type, m->module_number);
    }
}

/* mb_http_input() reports the encodings detected in this request's input
 * (mbstring.encoding_translation); its RINIT would also drop the
 * bootstrap's mb_internal_encoding(), so only the detection is reset.
 * Without it a request with no body or cookies reports the previous
 * request's. */
void ppm_mbstring_reset(void)
{
    zend_module_entry *m = find_module("mbstring");
    /* The fields reset come before those whose presence depends on how
     * mbstring was configured (HAVE_MBREGEX, not in these headers), so
     * their offsets hold either way; the size check guards against a
     * mbstring of another layout altogether. */
    if (!m || !m->globals_ptr ||
        m->globals_size < offsetof(zend_mbstring_globals, http_output_conv_mimetypes)) {
        return;
    }
    zend_mbstring_globals *g = m->globals_ptr;
    g->http_input_identify = NULL;
    g->http_input_identify_get = NULL;
    g->http_input_identify_post = NULL;
    g->http_input_identify_cookie = NULL;
    g->http_input_identify_string = NULL;
}

void ppm_clear_last_error(void)
{
    if (PG(last_error_message)) {
        zend_string_release(PG(last_error_message));
        PG(last_error_message) = NULL;
    }
    if (PG(last_error_file)) {
        zend_string_release(PG(last_error_file));
        PG(last_error_file) = NULL;
    }
    PG(last_error_type) = 0;
    PG(last_error_lineno) = 0;
}

/* Files loaded since the last call go to Rust (the master reloads on
 * their change in debug mode). The table only grows within a generation
 * and starts again with the next, so a count says what is new. */
void ppm_report_included(void)
{
    static uint32_t seen = 0;
    uint32_t count = zend_hash_num_elements(&EG(included_files));
    if (count < seen) {
        seen = 0;
    }
    if (count == seen) {
        return;
    }
    uint32_t i = 0;
    zend_string *key;
    ZEND_HASH_FOREACH_STR_KEY(&EG(included_files), key) {
        if (i++ >= seen && key) {
            ppm_rs_included(ZSTR_VAL(key), ZSTR_LEN(key));
        }
    } ZEND_HASH_FOREACH_END();
    seen = count;
}

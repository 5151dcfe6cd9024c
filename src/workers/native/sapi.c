/*
 * ppm's SAPI: PHP hosted by a ppm worker process.
 *
 * Theory of operation (facts in /work/shared/EMBEDDING-PHP.md, reference:
 * FrankenPHP's frankenphp.c). One interpreter, on the thread that calls
 * ppm_php_run(). A "generation" is one run of the worker script: a full
 * PHP request startup, the script bootstraps the application and loops on
 * ppm_handle_request(), a full request shutdown. Each HTTP request inside
 * a generation is a partial startup/teardown that keeps the bootstrapped
 * application (no zend_activate, no RINIT/RSHUTDOWN except session and
 * filter) and resets everything one user could otherwise see of another.
 *
 * exit(), a fatal error, a timeout or out-of-memory end the generation; the
 * response PHP built is delivered and the script starts again in-process.
 * Socket I/O is Rust's, through the ppm_rs_* leaf callbacks (sapi.h).
 */
#include "sapi.h"
#include "sapi_parts.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "SAPI.h"
#include "php.h"
#include "php_main.h"
#include "php_output.h"
#include "php_variables.h"
#include "ext/standard/head.h"
#include "ext/standard/info.h"
#include "zend_exceptions.h"
#include "zend_ini.h"
#include "zend_signal.h"

static struct {
    const ppm_config *config;
    int classic;         /* --bridge=script */
    int booted;          /* ppm_handle_request() ran once in this generation */
    int boot_reported;   /* the script reported its own boot error */
    int req_active;      /* `current` is a request bound to the SAPI */
    int finished;        /* its response end was delivered early */
    int stopping;        /* told to stop: no next generation */
    int outcome;         /* how the handler ended, when it unwound the script */
    int have_stats;
    size_t memory, peak;
    zend_long max_execution_time;
    zval server_base;        /* $_SERVER minus the request, from ppm_configure() */
    ppm_request current;
} ppm;

/* ---- SAPI callbacks: thin forwards to Rust ---- */

static size_t ppm_ub_write(const char *str, size_t len)
{
    ppm_rs_write(str, len);
    return len;
}

static void ppm_flush(void *server_context)
{
    (void)server_context;
    ppm_rs_flush();
}

static int ppm_send_headers(sapi_headers_struct *headers)
{
    if (!ppm.req_active || ppm.finished) {
        return SAPI_HEADER_SENT_SUCCESSFULLY;
    }
    size_t count = zend_llist_count(&headers->headers), i = 0;
    ppm_str *lines = count ? emalloc(count * sizeof(*lines)) : NULL;
    zend_llist_position pos;
    for (sapi_header_struct *h = zend_llist_get_first_ex(&headers->headers, &pos); h && i < count;
         h = zend_llist_get_next_ex(&headers->headers, &pos)) {
        lines[i].ptr = h->header;
        lines[i].len = h->header_len;
        i++;
    }
    ppm_rs_send_head(headers->http_response_code ? headers->http_response_code : 200, lines, i);
    if (lines) {
        efree(lines);
    }
    return SAPI_HEADER_SENT_SUCCESSFULLY;
}

static size_t ppm_read_post(char *buf, size_t len)
{
    return ppm.req_active ? ppm_rs_read_body(buf, len) : 0;
}

static char *ppm_read_cookies(void)
{
    return ppm.req_active ? (char *)ppm.current.cookie.ptr : NULL;
}

/* $_SERVER: the bootstrap's view of the environment, then the request's
 * own entries (computed by Rust), through the input filter like any SAPI. */
static void ppm_register_variables(zval *track)
{
    if (Z_TYPE(ppm.server_base) == IS_ARRAY) {
        zend_hash_copy(Z_ARRVAL_P(track), Z_ARRVAL(ppm.server_base), zval_add_ref);
    } else {
        php_import_environment_variables(track);
    }
    if (!ppm.req_active) {
        return;
    }
    for (size_t i = 0; i < ppm.current.server_len; i++) {
        const ppm_pair *p = &ppm.current.server[i];
        php_register_variable_safe(p->key.ptr, p->value.ptr, p->value.len, track);
    }
}

/* getenv() sees the request's CGI variables first, as under php-fpm
 * (whose getenv() reads the FastCGI parameters); then the process's. */
static char *ppm_getenv(const char *name, size_t name_len)
{
    if (!ppm.req_active) {
        return NULL;
    }
    /* The last of equal names wins, as in $_SERVER. */
    for (size_t i = ppm.current.server_len; i-- > 0;) {
        const ppm_pair *p = &ppm.current.server[i];
        if (p->key.len == name_len && memcmp(p->key.ptr, name, name_len) == 0) {
            return (char *)p->value.ptr;
        }
    }
    return NULL;
}

static void ppm_log_message(const char *msg, int syslog_type)
{
    (void)syslog_type;
    ppm_rs_log(msg, strlen(msg));
}

static int ppm_module_startup(sapi_module_struct *module)
{
    return php_module_startup(module, NULL);
}

/* Named cgi-fcgi so that opcache, which only runs under SAPIs it knows,
 * stays on; it is also what applications saw under php-cgi. */
static sapi_module_struct ppm_sapi = {
    .name = "cgi-fcgi",
    .pretty_name = "ppm",
    .startup = ppm_module_startup,
    .shutdown = php_module_shutdown_wrapper,
    .ub_write = ppm_ub_write,
    .flush = ppm_flush,
    .sapi_error = php_error,
    .send_headers = ppm_send_headers,
    .read_post = ppm_read_post,
    .read_cookies = ppm_read_cookies,
    .register_server_variables = ppm_register_variables,
    .getenv = ppm_getenv,
    .log_message = ppm_log_message,
};

/* ---- per-request partial startup and teardown ---- */

/* Rebuilds the superglobals. $_FILES goes first (rfc1867 fills it from
 * $_POST's callback); $_SERVER and $_REQUEST are JIT globals that code
 * compiled at boot never arms again, so they are always rebuilt. */
static void reset_superglobals(void)
{
    zval *files = &PG(http_globals)[TRACK_VARS_FILES];
    zval_ptr_dtor_nogc(files);
    ZVAL_UNDEF(files);
    zend_auto_global *ag;
    ZEND_HASH_MAP_FOREACH_PTR(CG(auto_globals), ag) {
        if (zend_string_equals_literal(ag->name, "_ENV") || !ag->auto_global_callback) {
            continue;
        }
        ag->armed = ag->auto_global_callback(ag->name);
    } ZEND_HASH_FOREACH_END();
}

/* php_request_startup() minus zend_activate() and the RINITs that would
 * destroy the application. */
static int request_startup(void)
{
    int ok = SUCCESS;
    ppm_fill_request_info(&ppm.current);
    SG(server_context) = &ppm;
    ppm.req_active = 1;
    ppm.finished = 0;

    /* Errors raised here are "PHP Request Startup ... in Unknown on line
     * 0", as under php-fpm, not a line of the worker script. */
    zend_execute_data *caller = EG(current_execute_data);
    EG(current_execute_data) = NULL;
    PG(during_request_startup) = 1;
    ppm_clear_last_error(); /* before sapi_activate(), whose warnings count */
    zend_try {
        php_output_activate();
        PG(header_is_being_sent) = 0;
        PG(connection_status) = PHP_CONNECTION_NORMAL;
        sapi_activate();
        if (PG(expose_php)) {
            sapi_add_header(SAPI_PHP_VERSION_HEADER, sizeof(SAPI_PHP_VERSION_HEADER) - 1, 1);
        }
        if (PG(output_handler) && PG(output_handler)[0]) {
            zval handler;
            ZVAL_STRING(&handler, PG(output_handler));
            php_output_start_user(&handler, 0, PHP_OUTPUT_HANDLER_STDFLAGS);
            zval_ptr_dtor(&handler);
        } else if (PG(output_buffering)) {
            php_output_start_user(NULL, PG(output_buffering) > 1 ? PG(output_buffering) : 0,
                                  PHP_OUTPUT_HANDLER_STDFLAGS);
        } else if (PG(implicit_flush)) {
            php_output_set_implicit_flush(1);
        }
        ppm_mbstring_reset(); /* before the input is parsed again */
        /* As in php_request_startup(): the input is parsed before the
         * modules' RINIT, and session upload progress only records
         * while modules are not yet activated. */
        PG(modules_activated) = 0;
        reset_superglobals();
        ppm_call_module("session", 1);
        ppm_call_module("filter", 1);
    } zend_catch {
        ok = FAILURE;
    } zend_end_try();
    PG(modules_activated) = 1;
    PG(during_request_startup) = 0;
    EG(current_execute_data) = caller;
    return ok;
}

/* SG(request_info) of `r`, for sapi_activate() to come, as php-fpm fills
 * it. The protocol is left alone, as php-fpm leaves it: sapi_activate()
 * makes it HTTP/1.0, so header('Location: ...') answers 302 to a POST as
 * under php-fpm, where PHP's rule would give 303 over HTTP/1.1
 * (tests/superglobals.rs and tests/classic.rs compare). */
void ppm_fill_request_info(const ppm_request *r)
{
    SG(request_info).request_method = r->method.ptr;
    SG(request_info).query_string = (char *)r->query.ptr;
    SG(request_info).request_uri = (char *)r->uri.ptr;
    SG(request_info).content_type = r->content_type.ptr;
    SG(request_info).content_length = r->content_length < 0 ? 0 : r->content_length;
    SG(request_info).path_translated = (char *)r->path_translated.ptr;
    SG(sapi_headers).http_response_code = 200; /* sapi_activate() keeps the last one */
    /* As php-fpm: PHP_AUTH_USER/PW from the Authorization header. */
    php_handle_auth_data(r->authorization.ptr);
}

/* sapi_deactivate() frees these without forgetting them. */
void ppm_forget_request_info(void)
{
    SG(request_info).auth_user = NULL;
    SG(request_info).auth_password = NULL;
    SG(request_info).auth_digest = NULL;
    SG(request_info).content_type_dup = NULL;
    SG(request_info).current_user = NULL;
}

static void request_teardown(void)
{
    zend_unset_timeout();
    zend_try {
        php_output_end_all();
    } zend_end_try();
    zend_try {
        ppm_call_module("session", 0); /* writes the session */
        ppm_call_module("filter", 0);
    } zend_end_try();
    /* Left in place, the next user would see this one's session before
     * session_start(). */
    zend_hash_str_del(&EG(symbol_table), "_SESSION", sizeof("_SESSION") - 1);
    ppm_ini_restore();
    zend_try {
        php_output_deactivate(); /* sends the headers if nothing did */
    } zend_end_try();
    /* sapi_deactivate() forgets php://input's temp stream; free it. */
    if (SG(request_info).request_body) {
        zend_list_delete(SG(request_info).request_body->res);
        SG(request_info).request_body = NULL;
    }
    zend_try {
        sapi_deactivate(); /* frees headers, deletes upload temp files, drains the body */
    } zend_end_try();
    ppm_forget_request_info();
    SG(request_info).request_method = NULL;
    SG(request_info).query_string = NULL;
    SG(request_info).request_uri = NULL;
    SG(request_info).content_type = NULL;
    SG(request_info).path_translated = NULL;
    SG(server_context) = NULL;
    zend_set_memory_limit(PG(memory_limit));
}

/* An uncaught exception: the application's handler if it set one, else
 * PHP's own "Uncaught ..." error without bailing out, and a 500. */
static void handle_exception(void)
{
    if (!SG(headers_sent) && Z_TYPE(EG(user_exception_handler)) == IS_UNDEF) {
        SG(sapi_headers).http_response_code = 500;
    }
    if (Z_TYPE(EG(user_exception_handler)) != IS_UNDEF) {
        zend_user_exception_handler();
    }
    if (EG(exception)) {
        zend_exception_error(EG(exception), E_ERROR | E_DONT_BAIL);
    }
}

static int bailout_outcome(void)
{
    if (PG(last_error_message)) {
        const char *m = ZSTR_VAL(PG(last_error_message));
        if (strncmp(m, "Maximum execution time", 22) == 0) {
            return PPM_OUTCOME_TIMEOUT;
        }
        if (strncmp(m, "Allowed memory size", 19) == 0 || strncmp(m, "Out of memory", 13) == 0) {
            return PPM_OUTCOME_OOM;
        }
    }
    return PPM_OUTCOME_FATAL;
}

/* ---- PHP functions ---- */

PHP_FUNCTION(ppm_handle_request)
{
    zend_fcall_info fci;
    zend_fcall_info_cache fcc;
    ZEND_PARSE_PARAMETERS_START(1, 1)
        Z_PARAM_FUNC(fci, fcc)
    ZEND_PARSE_PARAMETERS_END();

    if (ppm.req_active || ppm.classic) {
        zend_throw_error(NULL, "ppm_handle_request() cannot run inside a request");
        RETURN_THROWS();
    }
    if (!ppm.booted) {
        /* End the boot pseudo-request; what it set up is the baseline. */
        ppm.booted = 1;
        request_teardown();
        ppm_ini_snapshot();
        ppm.max_execution_time = zend_ini_long("max_execution_time", sizeof("max_execution_time") - 1, 0);
        const char *limit = zend_ini_string("memory_limit", sizeof("memory_limit") - 1, 0);
        if (limit) {
            ppm_rs_php_info(limit, strlen(limit));
        }
    }
    ppm_report_included();
    /* The timeout (ITIMER_PROF: CPU time) is already off while waiting:
     * request_teardown() unset it, and this is the only way in. */
    if (!ppm_rs_next_request(&ppm.current, ppm.have_stats, ppm.memory, ppm.peak)) {
        ppm.stopping = 1;
        RETURN_FALSE;
    }
    ppm.have_stats = 0;
    ppm_backtrace_cancel(); /* asked while idle: there was nothing to show */
    if (request_startup() == FAILURE) {
        /* A bailout in startup (e.g. session.auto_start with a broken
         * handler): answer what PHP has, continue. */
        if (!SG(headers_sent)) {
            SG(sapi_headers).http_response_code = 500;
        }
        request_teardown();
        ppm.req_active = 0;
        ppm_rs_end_response(0, PPM_OUTCOME_FATAL);
        RETURN_TRUE;
    }
    zend_set_timeout(ppm.max_execution_time, 0);

    zval retval;
    ZVAL_UNDEF(&retval);
    fci.retval = &retval;
    fci.param_count = 0;
    fci.params = NULL;
    zend_call_function(&fci, &fcc);
    zval_ptr_dtor(&retval);

    int outcome = PPM_OUTCOME_NORMAL;
    if (EG(exception)) {
        if (zend_is_unwind_exit(EG(exception)) || zend_is_graceful_exit(EG(exception))) {
            /* exit() (or a delayed out-of-memory): let it unwind the worker
             * script, so destructors run and their output arrives; the
             * generation's end delivers the response and restarts. */
#ifdef ZEND_HAS_OOM
            ppm.outcome = ZEND_HAS_OOM() ? PPM_OUTCOME_OOM : PPM_OUTCOME_EXIT;
#else
            ppm.outcome = PPM_OUTCOME_EXIT;
#endif
            RETURN_FALSE;
        }
        outcome = PPM_OUTCOME_EXCEPTION;
        handle_exception();
    }
    request_teardown();
    ppm.req_active = 0;
    ppm_rs_end_response(0, outcome);
    ppm.memory = zend_memory_usage(0);
    ppm.peak = zend_memory_peak_usage(0);
    ppm.have_stats = 1;
    RETURN_TRUE;
}

PHP_FUNCTION(fastcgi_finish_request)
{
    ZEND_PARSE_PARAMETERS_NONE();
    if (!ppm.req_active || ppm.finished) {
        RETURN_FALSE;
    }
    php_output_end_all();
    php_header();
    ppm.finished = 1;
    ppm_rs_end_response(PPM_END_EARLY, PPM_OUTCOME_NORMAL);
    RETURN_TRUE;
}

PHP_FUNCTION(getallheaders)
{
    ZEND_PARSE_PARAMETERS_NONE();
    array_init(return_value);
    if (!ppm.req_active) {
        return;
    }
    for (size_t i = 0; i < ppm.current.headers_len; i++) {
        const ppm_pair *h = &ppm.current.headers[i];
        add_assoc_stringl_ex(return_value, h->key.ptr, h->key.len, h->value.ptr, h->value.len);
    }
}

PHP_FUNCTION(ppm_worker_config)
{
    ZEND_PARSE_PARAMETERS_NONE();
    RETURN_STRING(ppm.config->config_json);
}

PHP_FUNCTION(ppm_configure)
{
    zval *base;
    zend_string *root, *script;
    ZEND_PARSE_PARAMETERS_START(3, 3)
        Z_PARAM_ARRAY(base)
        Z_PARAM_STR(root)
        Z_PARAM_STR(script)
    ZEND_PARSE_PARAMETERS_END();
    zval_ptr_dtor(&ppm.server_base);
    ZVAL_COPY(&ppm.server_base, base);
    (void)return_value; /* returns void */
    ppm_rs_set_script(ZSTR_VAL(root), ZSTR_LEN(root), ZSTR_VAL(script), ZSTR_LEN(script));
}

PHP_FUNCTION(ppm_boot_error)
{
    zend_string *message;
    ZEND_PARSE_PARAMETERS_START(1, 1)
        Z_PARAM_STR(message)
    ZEND_PARSE_PARAMETERS_END();
    (void)return_value; /* returns void */
    ppm.boot_reported = 1;
    ppm_rs_boot_error(ZSTR_VAL(message), ZSTR_LEN(message));
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_ppm_handle_request, 0, 1, _IS_BOOL, 0)
    ZEND_ARG_TYPE_INFO(0, handler, IS_CALLABLE, 0)
ZEND_END_ARG_INFO()
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_bool_none, 0, 0, _IS_BOOL, 0)
ZEND_END_ARG_INFO()
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_array_none, 0, 0, IS_ARRAY, 0)
ZEND_END_ARG_INFO()
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_string_none, 0, 0, IS_STRING, 0)
ZEND_END_ARG_INFO()
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_ppm_configure, 0, 3, IS_VOID, 0)
    ZEND_ARG_TYPE_INFO(0, server, IS_ARRAY, 0)
    ZEND_ARG_TYPE_INFO(0, documentRoot, IS_STRING, 0)
    ZEND_ARG_TYPE_INFO(0, scriptName, IS_STRING, 0)
ZEND_END_ARG_INFO()
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_ppm_boot_error, 0, 1, IS_VOID, 0)
    ZEND_ARG_TYPE_INFO(0, message, IS_STRING, 0)
ZEND_END_ARG_INFO()

static const zend_function_entry ppm_functions[] = {
    ZEND_FE(ppm_handle_request, arginfo_ppm_handle_request)
    ZEND_FE(fastcgi_finish_request, arginfo_bool_none)
    ZEND_FE(getallheaders, arginfo_array_none)
    ZEND_FALIAS(apache_request_headers, getallheaders, arginfo_array_none)
    ZEND_FE(ppm_worker_config, arginfo_string_none)
    ZEND_FE(ppm_configure, arginfo_ppm_configure)
    ZEND_FE(ppm_boot_error, arginfo_ppm_boot_error)
    ZEND_FE_END
};

/* ---- for classic.c ---- */

ppm_request *ppm_request_slot(void)
{
    return &ppm.current;
}

/* Binds the request in ppm_request_slot() to the SAPI (output, headers,
 * body, cookies, $_SERVER go to and come from it) or unbinds it. */
void ppm_bind_request(int active)
{
    ppm.req_active = active;
    ppm.finished = 0;
    SG(server_context) = active ? (void *)&ppm : NULL;
}

/* ---- process level ---- */

/* The library's SONAME is the unversioned libphp.so, so the loader may
 * have picked another PHP than the one the shim was compiled against.
 * Patch releases of one minor version share the ABI (one Zend API number
 * per minor), so major.minor must match. */
static int version_matches(void)
{
    static const char built[] = ZEND_TOSTR(PHP_MAJOR_VERSION) "." ZEND_TOSTR(PHP_MINOR_VERSION) ".";
    const char *found = zend_get_module_version("standard");
    if (found && strncmp(found, built, sizeof(built) - 1) == 0) {
        return 1;
    }
    char msg[512];
    int n = snprintf(msg, sizeof(msg),
                     "ppm was built against PHP %s but the PHP library loaded at run time is %s; "
                     "install libphp%d.%d-embed (the library's SONAME is the unversioned libphp.so, "
                     "so another PHP's library may be found first) or rebuild ppm with that PHP's "
                     "php-config (PHP_CONFIG=... cargo build)",
                     PHP_VERSION, found ? found : "unknown", PHP_MAJOR_VERSION, PHP_MINOR_VERSION);
    ppm_rs_boot_error(msg, n < 0 ? 0 : (size_t)n >= sizeof(msg) ? sizeof(msg) - 1 : (size_t)n);
    return 0;
}

/* One run of the worker script. Returns 0 to run it again, else the
 * process exit status + 1. */
static int run_generation(void)
{
    ppm.booted = 0;
    ppm.boot_reported = 0;
    ppm.outcome = PPM_OUTCOME_NORMAL;
    SG(request_info).path_translated = (char *)ppm.config->script;
    SG(server_context) = &ppm;
    SG(sapi_headers).http_response_code = 200;
    if (php_request_startup() == FAILURE) {
        static const char msg[] = "PHP's request startup failed";
        ppm_rs_boot_error(msg, sizeof(msg) - 1);
        return 2;
    }
    zend_file_handle file;
    zend_stream_init_filename(&file, ppm.config->script);
    file.primary_script = 1;
    zend_first_try {
        php_execute_script(&file);
    } zend_end_try();
    zend_destroy_file_handle(&file);

    int outcome = ppm.outcome;
    if (ppm.req_active && outcome == PPM_OUTCOME_NORMAL) {
        outcome = bailout_outcome();
    }
    if (ppm.req_active && outcome != PPM_OUTCOME_EXIT && !SG(headers_sent)) {
        SG(sapi_headers).http_response_code = 500;
    }
    int status = 0;
    if (!ppm.booted) {
        if (!ppm.boot_reported) {
            char msg[2048];
            int n;
            if (PG(last_error_message)) {
                n = snprintf(msg, sizeof(msg), "PHP error: %s in %s on line %d",
                             ZSTR_VAL(PG(last_error_message)),
                             PG(last_error_file) ? ZSTR_VAL(PG(last_error_file)) : "Unknown",
                             PG(last_error_lineno));
            } else {
                n = snprintf(msg, sizeof(msg), "the worker script ended before serving a request");
            }
            ppm_rs_boot_error(msg, n < 0 ? 0 : (size_t)n >= sizeof(msg) ? sizeof(msg) - 1 : (size_t)n);
        }
        status = 2;
    }
    ppm_ini_free();
    zval_ptr_dtor(&ppm.server_base);
    ZVAL_UNDEF(&ppm.server_base);
    php_request_shutdown(NULL); /* flushes a request still bound: output, headers */
    if (ppm.req_active) {
        ppm.req_active = 0;
        ppm_rs_end_response(0, outcome);
    }
    ppm_forget_request_info();
    SG(server_context) = NULL;
    if (status) {
        return status;
    }
    if (ppm.stopping) {
        return 1;
    }
    ppm_rs_script_ended(outcome);
    return 0;
}

int ppm_php_run(const ppm_config *config)
{
    memset(&ppm, 0, sizeof(ppm));
    ZVAL_UNDEF(&ppm.server_base);
    ppm.config = config;

    /* Before zend_signal_startup(): PHP's deferring handler chains to it
     * outside critical sections. */
    ppm_backtrace_signal();
    zend_signal_startup();
    sapi_startup(&ppm_sapi);
    ppm_sapi.ini_entries = (char *)config->ini_entries;
    ppm_sapi.php_ini_ignore_cwd = 1;
    ppm_sapi.additional_functions = ppm_functions;
    if (config->ini_path) {
        ppm_sapi.php_ini_path_override = (char *)config->ini_path;
    }
    if (ppm_sapi.startup(&ppm_sapi) == FAILURE) {
        static const char msg[] = "PHP's module startup failed";
        ppm_rs_boot_error(msg, sizeof(msg) - 1);
        sapi_shutdown();
        return 1;
    }
    if (!version_matches()) {
        php_module_shutdown();
        sapi_shutdown();
        return PPM_RUN_VERSION_MISMATCH;
    }
    ppm_backtrace_hook();

    int result;
    if (config->classic) {
        /* Each script runs in its own directory, as under php-fpm. */
        ppm.classic = 1;
        const char *limit = zend_ini_string("memory_limit", sizeof("memory_limit") - 1, 0);
        if (limit) {
            ppm_rs_php_info(limit, strlen(limit));
        }
        result = ppm_classic_run() + 1;
    } else {
        SG(options) |= SAPI_OPTION_NO_CHDIR;
        while ((result = run_generation()) == 0) {
        }
    }
    php_module_shutdown();
    sapi_shutdown();
    return result - 1;
}

/*
 * --bridge=script (part of ppm's SAPI, see sapi.c): each request runs the
 * script Rust chose for it (ppm_request.path_translated) in a full PHP
 * request, startup to shutdown, as php-fpm runs it: every module's RINIT
 * and RSHUTDOWN, a fresh symbol table, shutdown functions, destructors,
 * the session written, output flushed, the memory manager reset. Nothing
 * of one request is left for the next but opcache's compiled scripts and
 * what PHP keeps per process (the stat cache, the cwd, putenv()).
 *
 * Rust has already refused what may not run (not .php, outside the
 * document root, a dotfile, missing): a request reaching here has a script.
 */
#include "sapi.h"
#include "sapi_parts.h"

#include "SAPI.h"
#include "php.h"
#include "php_main.h"

#define FATAL_ERRORS (E_ERROR | E_CORE_ERROR | E_COMPILE_ERROR | E_USER_ERROR | E_PARSE)

/* How the script ended. A fatal error (an uncaught exception, a timeout,
 * out-of-memory) ended this request only: PHP logged it and, if nothing
 * was sent yet, made the status 500, as under php-fpm; the next request
 * starts afresh, so the master is told "handled, the worker continues". */
static int script_outcome(void)
{
    return (PG(last_error_type) & FATAL_ERRORS) ? PPM_OUTCOME_EXCEPTION : PPM_OUTCOME_NORMAL;
}

static void clear_request_info(void)
{
    ppm_forget_request_info();
    SG(request_info).request_method = NULL;
    SG(request_info).query_string = NULL;
    SG(request_info).request_uri = NULL;
    SG(request_info).content_type = NULL;
    SG(request_info).path_translated = NULL;
}

int ppm_classic_run(void)
{
    int have_stats = 0;
    size_t memory = 0, peak = 0;
    ppm_request *r = ppm_request_slot();
    while (ppm_rs_next_request(r, have_stats, memory, peak)) {
        ppm_backtrace_cancel(); /* asked while idle: there was nothing to show */
        ppm_fill_request_info(r);
        ppm_bind_request(1);
        int outcome = PPM_OUTCOME_NORMAL;
        if (php_request_startup() == FAILURE) {
            SG(sapi_headers).http_response_code = 500;
            outcome = PPM_OUTCOME_FATAL;
        } else {
            zend_file_handle file;
            zend_stream_init_filename(&file, r->path_translated.ptr);
            file.primary_script = 1;
            /* php_execute_script() catches the bailouts of fatal errors
             * itself; this try only guards against one from elsewhere. */
            zend_try {
                php_execute_script(&file);
            } zend_end_try();
            zend_destroy_file_handle(&file);
            outcome = script_outcome();
        }
        peak = zend_memory_peak_usage(0);
        /* Shutdown functions, destructors, output and headers, the
         * session, every RSHUTDOWN, the memory manager's reset. */
        php_request_shutdown(NULL);
        memory = zend_memory_usage(0);
        have_stats = 1;
        ppm_rs_end_response(0, outcome);
        ppm_bind_request(0);
        clear_request_info();
    }
    return 0;
}

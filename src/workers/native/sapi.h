/*
 * The boundary between ppm's Rust code and PHP's embed library.
 *
 * The C side (sapi.c) holds only what needs PHP's macros or zend_try
 * (setjmp/longjmp). Everything else is Rust: the functions named ppm_rs_*
 * are leaf callbacks implemented in src/workers/native/ffi.rs. They never call
 * back into PHP and never unwind, so no Rust frame is ever skipped by a
 * longjmp.
 *
 * Every string handed from Rust to C is NUL-terminated; `len` excludes the
 * NUL.
 */
#ifndef PPM_SAPI_H
#define PPM_SAPI_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *ptr;
    size_t len;
} ppm_str;

typedef struct {
    ppm_str key;
    ppm_str value;
} ppm_pair;

/* One request, owned by Rust until the next ppm_rs_next_request() call. */
typedef struct {
    ppm_str method;
    ppm_str uri;            /* the request target, as sent */
    ppm_str query;          /* after '?', "" when none */
    ppm_str content_type;   /* ptr NULL when absent */
    int64_t content_length; /* -1 when absent */
    ppm_str cookie;         /* joined Cookie headers; ptr NULL when absent */
    ppm_str authorization;  /* ptr NULL when absent */
    ppm_str path_translated;
    const ppm_pair *server; /* $_SERVER entries of this request */
    size_t server_len;
    const ppm_pair *headers; /* getallheaders() */
    size_t headers_len;
} ppm_request;

typedef struct {
    const char *script;      /* the worker script */
    const char *ini_entries; /* "key=value\n" lines, like -d */
    const char *ini_path;    /* php.ini file or directory (-c); NULL: PHP's lookup */
    const char *config_json; /* returned by ppm_worker_config() */
    int classic;             /* --bridge=script: each request runs its own script
                                in a full PHP request (`path_translated`) */
} ppm_config;

/* How a request ended, reported with its response end. */
enum ppm_outcome {
    PPM_OUTCOME_NORMAL = 0,
    PPM_OUTCOME_EXIT = 1,      /* exit()/die(): the script restarts */
    PPM_OUTCOME_EXCEPTION = 2, /* uncaught: handled, the script continues */
    PPM_OUTCOME_FATAL = 3,     /* fatal error: the script restarts */
    PPM_OUTCOME_TIMEOUT = 4,   /* max_execution_time: the script restarts */
    PPM_OUTCOME_OOM = 5        /* memory_limit: the script restarts */
};

/* Response end flags. */
#define PPM_END_EARLY 1 /* fastcgi_finish_request() */

/* ppm_php_run()'s status when the loaded PHP library is not the major.minor
 * the shim was compiled against (the reason went to ppm_rs_boot_error). */
#define PPM_RUN_VERSION_MISMATCH 3

/* Runs PHP on the calling thread until told to stop; returns the exit status. */
int ppm_php_run(const ppm_config *config);


/* ---- implemented in Rust ---- */

/* Says ready (with the previous request's memory figures when `stats`),
 * then blocks for the next request. 1: `out` is filled; 0: stop. */
int ppm_rs_next_request(ppm_request *out, int stats, size_t memory, size_t peak);
/* Copies up to `len` bytes of the request body; 0 at its end. */
size_t ppm_rs_read_body(char *buf, size_t len);
/* PHP's output; dropped after the response ended or outside a request. */
void ppm_rs_write(const char *buf, size_t len);
/* Sends what is buffered (PHP's flush()). */
void ppm_rs_flush(void);
/* The response head: status and PHP's header lines. */
void ppm_rs_send_head(int status, const ppm_str *lines, size_t count);
/* The response is complete; later output is dropped. Idempotent. */
void ppm_rs_end_response(int flags, int outcome);
/* A line for the log (PHP's error_log, startup messages). */
void ppm_rs_log(const char *msg, size_t len);
/* The worker script could not boot the application. */
void ppm_rs_boot_error(const char *msg, size_t len);
/* The PHP backtrace of the running code, asked for with SIGUSR1. */
void ppm_rs_backtrace(const char *text, size_t len);
/* The worker script ended (it restarts unless `stopping`). */
void ppm_rs_script_ended(int outcome);
/* A file PHP loaded (reported to the master in debug mode). */
void ppm_rs_included(const char *path, size_t len);
/* PHP's memory_limit setting after the bootstrap. */
void ppm_rs_php_info(const char *memory_limit, size_t len);
/* Document root and script name for $_SERVER, set once after bootstrap. */
void ppm_rs_set_script(const char *document_root, size_t root_len, const char *script_name,
                       size_t name_len);

#endif

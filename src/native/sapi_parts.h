/*
 * Internal interface between the parts of ppm's SAPI (sapi.c, ini.c,
 * backtrace.c, request_state.c); not seen by Rust.
 */
#ifndef PPM_SAPI_PARTS_H
#define PPM_SAPI_PARTS_H

/* ini.c: snapshot after the bootstrap, restore after each request (at the
 * deactivate stage), free at the end of a generation. */
void ppm_ini_snapshot(void);
void ppm_ini_restore(void);
void ppm_ini_free(void);

/* backtrace.c: the SIGUSR1 handler (install before PHP's signal startup),
 * the VM interrupt hook (after module startup), and forgetting a request
 * for a backtrace that came while idle. */
void ppm_backtrace_signal(void);
void ppm_backtrace_hook(void);
void ppm_backtrace_cancel(void);

/* request_state.c: a module's RINIT (startup 1) or RSHUTDOWN (0), if it
 * is loaded; the request state of mbstring's input translation;
 * error_get_last() cleared; the files loaded since the last call, to
 * Rust (ppm_rs_included). */
void ppm_call_module(const char *name, int startup);
void ppm_mbstring_reset(void);
void ppm_clear_last_error(void);
void ppm_report_included(void);

#endif

/*
 * Internal interface between the parts of ppm's SAPI (sapi.c, ini.c,
 * backtrace.c, request_state.c, classic.c); not seen by Rust.
 */
#ifndef PPM_SAPI_PARTS_H
#define PPM_SAPI_PARTS_H

#include "sapi.h"

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

/* sapi.c: the request bound to the SAPI, for classic.c; SG(request_info)
 * of a request. */
ppm_request *ppm_request_slot(void);
void ppm_fill_request_info(const ppm_request *r);
void ppm_bind_request(int active);
void ppm_forget_request_info(void);

/* classic.c: --bridge=script, one full PHP request per request until told
 * to stop; returns 0. */
int ppm_classic_run(void);

/* request_state.c: a module's RINIT (startup 1) or RSHUTDOWN (0), if it
 * is loaded; the request state of mbstring's input translation;
 * error_get_last() cleared; the files loaded since the last call, to
 * Rust (ppm_rs_included). */
void ppm_call_module(const char *name, int startup);
void ppm_mbstring_reset(void);
void ppm_clear_last_error(void);
void ppm_report_included(void);

#endif

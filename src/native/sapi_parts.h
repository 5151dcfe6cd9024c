/*
 * Internal interface between the parts of ppm's SAPI (sapi.c, ini.c,
 * backtrace.c); not seen by Rust.
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

/* sapi.c: the request bound to the SAPI, for classic.c. */
ppm_request *ppm_request_slot(void);
void ppm_bind_request(int active);
void ppm_forget_request_info(void);

/* classic.c: --bridge=script, one full PHP request per request until told
 * to stop; returns 0. */
int ppm_classic_run(void);

#endif

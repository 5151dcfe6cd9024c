/*
 * The PHP backtrace of the running request on SIGUSR1 (part of ppm's
 * SAPI, see sapi.c): the master asks before it kills a worker past its
 * time limit.
 */
#include "sapi.h"
#include "sapi_parts.h"

#include <signal.h>
#include <string.h>

#include "php.h"
#include "zend_builtin_functions.h"
#include "zend_smart_str.h"

/* Set by the signal handler, read between two opcodes: a backtrace can only
 * be taken safely by the VM itself, so the handler just asks for an
 * interrupt. (A request blocked inside a C call answers when it returns.) */
static volatile sig_atomic_t backtrace_wanted;
static void (*previous_interrupt)(zend_execute_data *execute_data);

static void on_sigusr1(int signo)
{
    (void)signo;
    backtrace_wanted = 1;
    zend_atomic_bool_store_ex(&EG(vm_interrupt), true);
}

static void send_backtrace(void)
{
    zval trace;
    zend_fetch_debug_backtrace(&trace, 0, DEBUG_BACKTRACE_IGNORE_ARGS, 0);
    smart_str out = {0};
    zend_long n = 0;
    /* Where the code runs now; the frames below say how it got there. */
    smart_str_appends(&out, "in ");
    smart_str_appends(&out, zend_get_executed_filename());
    smart_str_appends(&out, " on line ");
    smart_str_append_long(&out, zend_get_executed_lineno());
    smart_str_appendc(&out, '\n');
    zval *frame;
    ZEND_HASH_FOREACH_VAL(Z_ARRVAL(trace), frame) {
        zval *file = zend_hash_str_find(Z_ARRVAL_P(frame), "file", sizeof("file") - 1);
        zval *line = zend_hash_str_find(Z_ARRVAL_P(frame), "line", sizeof("line") - 1);
        zval *class = zend_hash_str_find(Z_ARRVAL_P(frame), "class", sizeof("class") - 1);
        zval *type = zend_hash_str_find(Z_ARRVAL_P(frame), "type", sizeof("type") - 1);
        zval *function = zend_hash_str_find(Z_ARRVAL_P(frame), "function", sizeof("function") - 1);
        smart_str_appendc(&out, '#');
        smart_str_append_long(&out, n++);
        smart_str_appendc(&out, ' ');
        if (file && Z_TYPE_P(file) == IS_STRING) {
            smart_str_append(&out, Z_STR_P(file));
            smart_str_appendc(&out, '(');
            smart_str_append_long(&out, line && Z_TYPE_P(line) == IS_LONG ? Z_LVAL_P(line) : 0);
            smart_str_appends(&out, "): ");
        } else {
            smart_str_appends(&out, "[internal function]: ");
        }
        if (class && Z_TYPE_P(class) == IS_STRING && type && Z_TYPE_P(type) == IS_STRING) {
            smart_str_append(&out, Z_STR_P(class));
            smart_str_append(&out, Z_STR_P(type));
        }
        if (function && Z_TYPE_P(function) == IS_STRING) {
            smart_str_append(&out, Z_STR_P(function));
        }
        smart_str_appends(&out, "()\n");
    } ZEND_HASH_FOREACH_END();
    zval_ptr_dtor(&trace);
    smart_str_0(&out);
    if (out.s) {
        ppm_rs_backtrace(ZSTR_VAL(out.s), ZSTR_LEN(out.s));
    } else {
        ppm_rs_backtrace("", 0);
    }
    smart_str_free(&out);
}

static void ppm_interrupt(zend_execute_data *execute_data)
{
    if (backtrace_wanted) {
        backtrace_wanted = 0;
        send_backtrace();
    }
    if (previous_interrupt) {
        previous_interrupt(execute_data);
    }
}

void ppm_backtrace_signal(void)
{
    struct sigaction usr1;
    memset(&usr1, 0, sizeof(usr1));
    usr1.sa_handler = on_sigusr1;
    sigemptyset(&usr1.sa_mask);
    usr1.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &usr1, NULL);
}

void ppm_backtrace_hook(void)
{
    previous_interrupt = zend_interrupt_function;
    zend_interrupt_function = ppm_interrupt;
}

void ppm_backtrace_cancel(void)
{
    backtrace_wanted = 0;
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * PHP-FPM's slowlog, by signal: when the master sends SIGUSR1 (a request
 * ran past --slow-request-time, or past --max-execution-time just before
 * the worker is killed), the worker reports the PHP backtrace of the code
 * it is running on the control channel.
 *
 * The handler runs between two opcodes of the interrupted code. A sleep()
 * or usleep() that the signal interrupts returns early; other system calls
 * are restarted.
 */
final class SlowLog
{
    public static function install(ControlChannel $control): void
    {
        if (!function_exists('pcntl_signal') || !function_exists('pcntl_async_signals')) {
            Log::line('the pcntl extension is missing: slow-request backtraces are off');
            return;
        }
        pcntl_async_signals(true);
        pcntl_signal(\SIGUSR1, static function () use ($control): void {
            $frames = debug_backtrace(DEBUG_BACKTRACE_IGNORE_ARGS);
            // The handler's own frame tells where the interrupted code was.
            $here = array_shift($frames) ?? [];
            $at = isset($here['file']) ? "at {$here['file']}({$here['line']})\n" : '';
            $control->send(['type' => 'backtrace', 'trace' => $at . self::format($frames)]);
        });
    }

    /** @param list<array<string, mixed>> $frames */
    public static function format(array $frames): string
    {
        $lines = [];
        foreach ($frames as $i => $frame) {
            $where = isset($frame['file']) ? $frame['file'] . '(' . ($frame['line'] ?? '?') . ')' : '[internal]';
            $call = ($frame['class'] ?? '') . ($frame['type'] ?? '') . ($frame['function'] ?? '');
            $lines[] = "#$i $where: $call()";
        }
        return implode("\n", $lines);
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Makes php-cgi usable as a long-lived worker, once, at start.
 *
 * Two things php-cgi does not allow from PHP code:
 * - php://fd/N is CLI-only ("Direct access to file descriptors is only
 *   available from command-line PHP"), so fd 3 cannot be opened;
 * - `-q` marks the headers as already sent, which makes session_start(),
 *   session_id($id) and every session ini_set() fail.
 *
 * So the process replaces itself (same pid, same process group) with the
 * same command line minus `-q`, the control socket moved from fd 3 to fd 0
 * (stdin is /dev/null and php://stdin can be opened under php-cgi), and
 * stdout sent to /dev/null (nothing of ours goes there; php-cgi would print
 * a CGI header block at exit).
 */
final class CgiReexec
{
    private const MARKER = 'PPM_WORKER_REEXEC';

    public static function ensure(): void
    {
        if (PHP_SAPI !== 'cgi-fcgi') {
            return;
        }
        $done = getenv(self::MARKER) !== false;
        if ($done) {
            putenv(self::MARKER);
            $pwd = getenv(self::MARKER . '_PWD');
            putenv(self::MARKER . '_PWD');
            if ($pwd !== false) {
                putenv('PWD=' . $pwd); // /bin/sh rewrote it
            }
        }
        if (!headers_sent() && self::stdinIsSocket()) {
            return;
        }
        if ($done) {
            if (!self::stdinIsSocket()) {
                return; // ControlChannel::open() reports it
            }
            Log::line('php-cgi still reports headers as sent: native sessions will not work');
            return;
        }
        self::exec();
    }

    public static function stdinIsSocket(): bool
    {
        $stdin = @fopen('php://stdin', 'rb');
        if ($stdin === false) {
            return false;
        }
        $stat = @fstat($stdin);
        fclose($stdin);
        return is_array($stat) && ($stat['mode'] & 0170000) === 0140000;
    }

    private static function exec(): void
    {
        $argv = self::commandLine();
        if ($argv === null || !function_exists('pcntl_exec') || !is_executable('/bin/sh')) {
            Log::line(
                'cannot re-execute php-cgi (needs /proc/self/cmdline, pcntl_exec() and /bin/sh); '
                . 'the control channel on fd 3 is out of reach'
            );
            return;
        }
        $argv = array_values(array_filter($argv, static fn (string $arg): bool => $arg !== '-q'));
        $redirect = self::stdinIsSocket() ? '' : ' 0<&3 3<&-';
        $env = getenv();
        $env[self::MARKER] = '1';
        if (isset($env['PWD'])) {
            $env[self::MARKER . '_PWD'] = $env['PWD'];
        }
        @pcntl_exec('/bin/sh', array_merge(['-c', 'exec "$0" "$@"' . $redirect . ' 1>/dev/null'], $argv), $env);
        Log::line('re-executing php-cgi failed: ' . (error_get_last()['message'] ?? 'unknown error'));
    }

    /** @return list<string>|null */
    private static function commandLine(): ?array
    {
        $raw = @file_get_contents('/proc/self/cmdline');
        if (!is_string($raw) || $raw === '') {
            return null;
        }
        $argv = explode("\0", rtrim($raw, "\0"));
        return $argv === [] ? null : $argv;
    }
}

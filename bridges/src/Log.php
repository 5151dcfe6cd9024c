<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Lines for the master's log (our stderr). php-cgi has no STDERR constant,
 * so the stream is opened once here.
 */
final class Log
{
    /** @var resource|null */
    private static $stream = null;

    public static function line(string $message): void
    {
        self::write('ppm worker: ' . $message . "\n");
    }

    /**
     * A warning PHP itself would emit while reading the request (before any
     * script runs, so no error handler sees it), worded the same way.
     */
    public static function startupWarning(string $message): void
    {
        self::raw("PHP Warning:  $message in Unknown on line 0");
    }

    /** Writes text as is (PHP error messages keep their own format). */
    public static function raw(string $text): void
    {
        self::write(str_ends_with($text, "\n") ? $text : $text . "\n");
    }

    private static function write(string $text): void
    {
        if (self::$stream === null) {
            $stream = @fopen('php://stderr', 'wb');
            if ($stream === false) {
                return;
            }
            self::$stream = $stream;
        }
        @fwrite(self::$stream, $text);
    }
}

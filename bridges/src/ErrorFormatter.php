<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/** PHP's own wording for errors, and the worker's error pages. */
final class ErrorFormatter
{
    public const FATAL = E_ERROR | E_PARSE | E_CORE_ERROR | E_COMPILE_ERROR | E_USER_ERROR | E_RECOVERABLE_ERROR;

    /** What PHP logs for an uncaught throwable. */
    public static function throwable(\Throwable $e): string
    {
        if ($e instanceof \ParseError) {
            return "PHP Parse error:  {$e->getMessage()} in {$e->getFile()} on line {$e->getLine()}";
        }
        if ($e instanceof \CompileError) {
            return "PHP Fatal error:  {$e->getMessage()} in {$e->getFile()} on line {$e->getLine()}";
        }
        return "PHP Fatal error:  Uncaught $e\n  thrown in {$e->getFile()} on line {$e->getLine()}";
    }

    /** What PHP logs for an error_get_last() entry. */
    public static function error(array $error): string
    {
        return sprintf(
            'PHP %s:  %s in %s on line %d',
            self::label((int) ($error['type'] ?? E_ERROR)),
            $error['message'] ?? '',
            $error['file'] ?? 'Unknown',
            $error['line'] ?? 0
        );
    }

    public static function label(int $type): string
    {
        return match ($type) {
            E_ERROR, E_CORE_ERROR, E_COMPILE_ERROR, E_USER_ERROR => 'Fatal error',
            E_RECOVERABLE_ERROR => 'Recoverable fatal error',
            E_PARSE => 'Parse error',
            E_WARNING, E_CORE_WARNING, E_COMPILE_WARNING, E_USER_WARNING => 'Warning',
            E_NOTICE, E_USER_NOTICE => 'Notice',
            E_DEPRECATED, E_USER_DEPRECATED => 'Deprecated',
            default => 'Unknown error',
        };
    }

    /** A plain error page; in debug mode it shows $detail. */
    public static function page(int $status, string $detail, bool $debug): Response
    {
        $title = $status . ' ' . StatusText::of($status);
        $body = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>$title</title></head>\n"
            . "<body><h1>$title</h1>\n";
        if ($debug && $detail !== '') {
            $body .= '<pre>' . htmlspecialchars($detail, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8') . "</pre>\n";
        }
        $body .= "</body></html>\n";
        return new Response($status, [
            'Content-Type' => 'text/html; charset=UTF-8',
            'Cache-Control' => 'no-store',
        ], $body);
    }
}

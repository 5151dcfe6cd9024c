<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * What an application or bridge may need beyond the superglobals.
 *
 * php://input cannot be refilled for every request in a long-lived process,
 * so the raw request body is available here instead:
 *
 *     $json = json_decode(\Ppm\Runtime\RequestContext::body(), true);
 *
 * Uploaded files are written to temporary files by the worker, not by PHP,
 * so is_uploaded_file()/move_uploaded_file() return false for them. Use
 * isUploadedFile()/moveUploadedFile() here, which accept exactly the
 * temporary files of the current request.
 */
final class RequestContext
{
    private static string $body = '';

    private static bool $active = false;

    /** @var array<string, true> temporary upload paths of this request */
    private static array $uploads = [];

    /** The raw body of the current request ('' between requests). */
    public static function body(): string
    {
        if (self::native()) {
            return (string) file_get_contents('php://input');
        }
        return self::$body;
    }

    /** Under ppm's own SAPI PHP fills php://input and uploads itself. */
    public static function native(): bool
    {
        return \function_exists('ppm_handle_request');
    }

    /** Whether a request is being handled right now. */
    public static function active(): bool
    {
        return self::$active;
    }

    public static function isUploadedFile(string $path): bool
    {
        if (self::native()) {
            return is_uploaded_file($path);
        }
        return isset(self::$uploads[$path]) && is_file($path);
    }

    /** Like move_uploaded_file(), for the worker's upload temporary files. */
    public static function moveUploadedFile(string $from, string $to): bool
    {
        if (self::native()) {
            return move_uploaded_file($from, $to);
        }
        if (!self::isUploadedFile($from)) {
            return false;
        }
        if (!@rename($from, $to)) {
            if (!@copy($from, $to)) {
                return false;
            }
            @unlink($from);
        }
        unset(self::$uploads[$from]);
        @chmod($to, 0666 & ~umask());
        return true;
    }

    /**
     * @internal
     * @param list<string> $uploads
     */
    public static function begin(string $body, array $uploads): void
    {
        self::$active = true;
        self::$body = $body;
        self::$uploads = array_fill_keys($uploads, true);
    }

    /**
     * Forgets the request and deletes the upload files still in place.
     *
     * @internal
     */
    public static function end(): void
    {
        foreach (array_keys(self::$uploads) as $path) {
            if (is_file((string) $path)) {
                @unlink((string) $path);
            }
        }
        self::$uploads = [];
        self::$body = '';
        self::$active = false;
    }
}

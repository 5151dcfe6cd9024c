<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * What the bridges read of the request beyond the superglobals. PHP fills
 * php://input and writes uploads itself, as under PHP-FPM; these stay for
 * applications written against earlier ppm versions, whose php://input
 * was empty and whose uploads PHP did not know.
 */
final class RequestContext
{
    /** The raw body of the current request. */
    public static function body(): string
    {
        return (string) file_get_contents('php://input');
    }

    public static function isUploadedFile(string $path): bool
    {
        return is_uploaded_file($path);
    }

    public static function moveUploadedFile(string $from, string $to): bool
    {
        return move_uploaded_file($from, $to);
    }
}

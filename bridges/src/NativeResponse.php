<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Sends a bridge's Response through PHP's own output: status and headers
 * with http_response_code() and header(), the body with echo. A header
 * named by the Response replaces one set with header() of the same name,
 * except Set-Cookie, which adds.
 */
final class NativeResponse
{
    public static function emit(Response $response): void
    {
        if (!headers_sent()) {
            http_response_code($response->status());
            foreach ($response->headers() as $name => $values) {
                $replace = strcasecmp($name, 'Set-Cookie') !== 0;
                foreach ($values as $value) {
                    header("$name: $value", $replace);
                    $replace = false;
                }
            }
        }
        $response->emitBody();
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Which $_SERVER keys describe a request. PHP fills the request's own per
 * request; what a bootstrap added to $_SERVER (e.g. Dotenv) is kept for
 * every request, minus these.
 */
final class RequestGlobals
{
    private const REQUEST_KEYS = [
        'QUERY_STRING', 'REQUEST_METHOD', 'CONTENT_TYPE', 'CONTENT_LENGTH', 'SCRIPT_NAME',
        'SCRIPT_FILENAME', 'REQUEST_URI', 'DOCUMENT_URI', 'DOCUMENT_ROOT', 'SERVER_PROTOCOL',
        'REQUEST_SCHEME', 'HTTPS', 'GATEWAY_INTERFACE', 'SERVER_SOFTWARE', 'REMOTE_ADDR', 'REMOTE_PORT',
        'REMOTE_HOST', 'REMOTE_USER', 'SERVER_ADDR', 'SERVER_PORT', 'SERVER_NAME', 'REDIRECT_STATUS',
        'PATH_INFO', 'PATH_TRANSLATED', 'PHP_SELF', 'PHP_AUTH_USER', 'PHP_AUTH_PW', 'PHP_AUTH_DIGEST',
        'AUTH_TYPE', 'REQUEST_TIME', 'REQUEST_TIME_FLOAT', 'argv', 'argc', 'FCGI_ROLE',
    ];

    /**
     * @param array<array-key, mixed> $variables
     * @return array<string, mixed> the variables minus anything request-ish
     */
    public static function withoutRequestKeys(array $variables): array
    {
        $environment = [];
        foreach ($variables as $key => $value) {
            $key = (string) $key;
            if (in_array($key, self::REQUEST_KEYS, true)
                || str_starts_with($key, 'HTTP_')
                || str_starts_with($key, 'REDIRECT_')
                || str_starts_with($key, 'ORIG_')
            ) {
                continue;
            }
            $environment[$key] = $value;
        }
        return $environment;
    }
}

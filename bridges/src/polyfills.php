<?php

/**
 * Functions PHP-FPM has and php-cgi (outside FastCGI) or php do not.
 */

declare(strict_types=1);

if (!function_exists('fastcgi_finish_request')) {
    /**
     * Sends the response now; the rest of the request runs after the client
     * has its answer and its output is discarded, as under PHP-FPM.
     */
    function fastcgi_finish_request(): bool
    {
        return \Ppm\Runtime\Worker::finishRequest();
    }
}

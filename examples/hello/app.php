<?php

/**
 * The smallest ppm application: a file returning a callable.
 *
 *     ppm start examples/hello --bridge=callable --bootstrap=app.php
 *
 * Everything before `return` runs once per worker; the callable runs per
 * request and writes its response like a classic PHP script.
 */

declare(strict_types=1);

$bootedAt = date(DATE_ATOM);

return static function () use ($bootedAt): void {
    $path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);

    switch ($path) {
        case '/':
            header('Content-Type: text/plain; charset=UTF-8');
            echo 'Hello from ppm worker ', getmypid(), "\n";
            break;

        case '/counter':
            session_start();
            $_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
            header('Content-Type: text/plain; charset=UTF-8');
            echo "Visits in this session: {$_SESSION['visits']} (worker booted at $bootedAt)\n";
            break;

        case '/stream':
            header('Content-Type: text/plain; charset=UTF-8');
            for ($i = 1; $i <= 3; $i++) {
                echo "tick $i\n";
                ob_flush();
                flush();
                usleep(300000);
            }
            break;

        default:
            http_response_code(404);
            header('Content-Type: text/plain; charset=UTF-8');
            echo "Not found: $path\n";
    }
};

<?php

// Laravel from Debian's php-laravel-framework; with Composer this file is
// Composer's own.

declare(strict_types=1);

set_include_path('/usr/share/php' . PATH_SEPARATOR . get_include_path());

require_once 'Illuminate/autoload.php';

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'App\\')) {
        $file = dirname(__DIR__) . '/app/' . strtr(substr($class, 4), '\\', '/') . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

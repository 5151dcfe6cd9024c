<?php

/**
 * Stands in for Composer's autoloader, from Debian packages:
 * php-nyholm-psr7 (PSR-7 + PSR-17), php-psr-http-message and
 * php-psr-http-factory, plus psr/http-server-handler shipped here (Debian
 * has no package for it) and this application's App\ namespace.
 */

declare(strict_types=1);

set_include_path('/usr/share/php' . PATH_SEPARATOR . get_include_path());

require_once 'Psr/Http/Message/autoload.php';
require_once 'Psr/Http/Message/factory-autoload.php';
require_once 'Nyholm/Psr7/autoload.php';

spl_autoload_register(static function (string $class): void {
    $map = [
        'Psr\\Http\\Server\\' => __DIR__ . '/psr/http-server-handler/src/',
        'App\\' => dirname(__DIR__) . '/src/',
    ];
    foreach ($map as $prefix => $dir) {
        if (strncmp($class, $prefix, strlen($prefix)) === 0) {
            $file = $dir . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
            if (is_file($file)) {
                require $file;
            }
            return;
        }
    }
});

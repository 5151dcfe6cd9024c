<?php

/**
 * The runtime's autoloader: one class per
 * file in src/, named after the class without its namespace (the master
 * embeds a flat list of files, see FILES).
 */

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    foreach (['Ppm\\Runtime\\', 'Ppm\\Bridge\\'] as $prefix) {
        if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
            continue;
        }
        $file = __DIR__ . '/src/' . substr($class, strlen($prefix)) . '.php';
        if (is_file($file)) {
            require $file;
        }
        return;
    }
});

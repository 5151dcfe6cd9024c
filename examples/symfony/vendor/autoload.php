<?php

// Symfony from Debian's packages (php-symfony-framework-bundle & friends);
// with Composer this file is Composer's own.

declare(strict_types=1);

set_include_path('/usr/share/php' . PATH_SEPARATOR . get_include_path());

require_once 'Symfony/Bundle/FrameworkBundle/autoload.php';
require_once 'Symfony/Component/HttpKernel/autoload.php';
require_once 'Symfony/Component/HttpFoundation/autoload.php';
require_once 'Symfony/Component/Routing/autoload.php';
require_once 'Symfony/Component/Dotenv/autoload.php';
require_once 'Psr/Log/autoload.php';

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'App\\')) {
        $file = dirname(__DIR__) . '/src/' . strtr(substr($class, 4), '\\', '/') . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\BootstrapException;

/**
 * Environment variables and autoloading shared by the framework bootstraps.
 *
 * A variable is read from $_SERVER, then $_ENV, then getenv() (the order
 * of Symfony's %env()% and Laravel's env()); setting one sets all three, so
 * that dotenv loaders, which never override a variable that already exists,
 * keep it.
 */
final class AppEnvironment
{
    public static function get(string $name): ?string
    {
        $value = $_SERVER[$name] ?? $_ENV[$name] ?? getenv($name);
        return is_scalar($value) ? (string) $value : null;
    }

    public static function set(string $name, string $value): void
    {
        $_SERVER[$name] = $value;
        $_ENV[$name] = $value;
        putenv("$name=$value");
    }

    /**
     * The worker has already loaded app_dir/vendor/autoload.php if it
     * exists; with COMPOSER_VENDOR_DIR set (relative to app_dir or
     * absolute) that directory's autoload.php is loaded too.
     *
     * @param string $needs a class the application cannot run without
     */
    public static function requireAutoloader(string $appDir, string $needs, string $package): void
    {
        $vendor = self::get('COMPOSER_VENDOR_DIR');
        if ($vendor !== null && $vendor !== '') {
            $file = ($vendor[0] === '/' ? $vendor : $appDir . '/' . $vendor) . '/autoload.php';
            if (!is_file($file)) {
                throw new BootstrapException("COMPOSER_VENDOR_DIR is set but $file does not exist");
            }
            (static function (string $__file): void {
                require_once $__file;
            })($file);
        }
        if (!class_exists($needs) && !interface_exists($needs)) {
            $where = is_file($appDir . '/vendor/autoload.php') || ($vendor ?? '') !== ''
                ? 'the application\'s autoloader does not load it'
                : "there is no $appDir/vendor/autoload.php (set COMPOSER_VENDOR_DIR if vendor/ lives elsewhere)";
            throw new BootstrapException("$package is missing: class $needs not found; $where");
        }
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Illuminate\Contracts\Http\Kernel as HttpKernel;
use Illuminate\Foundation\Application;
use Ppm\Runtime\BootstrapException;
use Symfony\Component\HttpFoundation\Request;

/**
 * --bootstrap=laravel: what Laravel's public/index.php does, once per
 * worker, and the reset a long-lived process needs between requests.
 *
 * - the autoloader: app_dir/vendor/autoload.php (loaded by the worker), or
 *   COMPOSER_VENDOR_DIR/autoload.php;
 * - APP_ENV from --app-env ("prod", ppm's default, becomes Laravel's
 *   "production") and APP_DEBUG from --debug; .env is Laravel's own affair
 *   (variables already in the environment win, as always);
 * - app_dir/bootstrap/app.php returns the application; its HTTP kernel is
 *   made and bootstrapped (environment, configuration, providers) once.
 *
 * After each request, so that no request sees another's state:
 * - the auth guards forget their user (and their logout/remember state);
 * - the session stores are emptied and given a fresh id (the next request
 *   loads its own session from its own cookie, or starts an empty one);
 * - the cookies queued with Cookie::queue() are dropped;
 * - the callbacks registered with app()->terminating() during the request
 *   are removed: those registered while booting run after every request,
 *   those registered during a request after that request only, as under
 *   PHP-FPM (Laravel never clears the list);
 * - the locale goes back to the configured one.
 */
final class LaravelBootstrap implements BootstrapInterface, RequestHooksInterface
{
    private Application $app;

    /** @var array<int, mixed> */
    private array $terminating = [];

    private string $locale = '';

    public function boot(string $appDir, string $appEnv, bool $debug): object
    {
        AppEnvironment::requireAutoloader($appDir, Application::class, 'laravel/framework');
        $file = $appDir . '/bootstrap/app.php';
        if (!is_file($file)) {
            throw new BootstrapException("the laravel bootstrap needs $file (returning the application)");
        }
        AppEnvironment::set('APP_ENV', $appEnv === 'prod' ? 'production' : $appEnv);
        AppEnvironment::set('APP_DEBUG', $debug ? 'true' : 'false');
        if (!defined('LARAVEL_START')) {
            define('LARAVEL_START', microtime(true));
        }
        $app = (static fn (string $__file) => require $__file)($file);
        if (!$app instanceof Application) {
            throw new BootstrapException(
                "$file must return an " . Application::class . ', it returned ' . get_debug_type($app)
            );
        }
        $kernel = $app->make(HttpKernel::class);
        Request::enableHttpMethodParameterOverride(); // as Illuminate\Http\Request::capture() does
        $kernel->bootstrap();
        $this->app = $app;
        $this->terminating = $this->terminatingCallbacks();
        $this->locale = (string) $app->getLocale();
        return $kernel;
    }

    public function beforeRequest(Request $request): void
    {
    }

    public function afterRequest(): void
    {
        $app = $this->app;
        $this->setTerminatingCallbacks($this->terminating);
        if ($app->resolved('auth')) {
            self::forgetUsers($app->make('auth'));
        }
        if ($app->resolved('session')) {
            self::emptySessions($app->make('session'));
        }
        if ($app->resolved('cookie')) {
            $app->make('cookie')->flushQueuedCookies();
        }
        if ($this->locale !== '' && $app->getLocale() !== $this->locale) {
            $app->setLocale($this->locale);
        }
    }

    /**
     * The guards stay (each is bound to the request through a rebinding
     * callback that would pile up if guards were re-created per request);
     * their per-request state goes.
     */
    private static function forgetUsers(object $auth): void
    {
        $guards = \Closure::bind(fn (): array => $this->guards ?? [], $auth, get_class($auth))();
        foreach ($guards as $guard) {
            \Closure::bind(function (): void {
                foreach (['user' => null, 'lastAttempted' => null, 'viaRemember' => false,
                    'loggedOut' => false, 'recallAttempted' => false] as $property => $value) {
                    if (property_exists($this, $property)) {
                        $this->{$property} = $value;
                    }
                }
            }, $guard, get_class($guard))();
        }
    }

    /**
     * The session stores stay (guards hold them); their content and id go.
     * StartSession sets the next request's id from its cookie and loads it.
     */
    private static function emptySessions(object $manager): void
    {
        $drivers = \Closure::bind(fn (): array => $this->drivers ?? [], $manager, get_class($manager))();
        foreach ($drivers as $store) {
            if (method_exists($store, 'flush') && method_exists($store, 'setId')) {
                $store->flush();
                $store->setId(null);
            }
        }
    }

    /** @return array<int, mixed> */
    private function terminatingCallbacks(): array
    {
        return \Closure::bind(fn (): array => $this->terminatingCallbacks, $this->app, Application::class)();
    }

    /** @param array<int, mixed> $callbacks */
    private function setTerminatingCallbacks(array $callbacks): void
    {
        \Closure::bind(function () use ($callbacks): void {
            $this->terminatingCallbacks = $callbacks;
        }, $this->app, Application::class)();
    }
}

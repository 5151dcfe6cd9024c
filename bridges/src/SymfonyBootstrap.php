<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\BootstrapException;
use Symfony\Component\Dotenv\Dotenv;
use Symfony\Component\ErrorHandler\Debug;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpKernel\EventListener\StreamedResponseListener;
use Symfony\Component\HttpKernel\HttpKernelInterface;
use Symfony\Component\HttpKernel\Kernel;
use Symfony\Component\HttpKernel\KernelEvents;

/**
 * --bootstrap=symfony: what a Symfony front controller (public/index.php)
 * does, once per worker.
 *
 * - the autoloader: app_dir/vendor/autoload.php (loaded by the worker), or
 *   COMPOSER_VENDOR_DIR/autoload.php;
 * - APP_ENV and APP_DEBUG from --app-env and --debug, then app_dir/.env
 *   through symfony/dotenv's bootEnv() when the application has both
 *   (.env.local, .env.$APP_ENV, .env.local.php as usual; variables already
 *   in the environment win);
 * - TRUSTED_PROXIES (comma-separated addresses or CIDRs, trusting
 *   X-Forwarded-For, -Port and -Proto) and TRUSTED_HOSTS (a regular
 *   expression), as the Symfony recipe's index.php did; the
 *   framework.trusted_proxies/trusted_hosts configuration, if any, wins;
 * - the kernel class from APP_KERNEL_CLASS (default App\Kernel), built
 *   with --app-env and --debug and booted.
 *
 * After each request: the kernel's services_resetter (every service tagged
 * kernel.reset: the session, loggers, Doctrine...), and the Doctrine entity
 * managers cleared (reset when closed) if the application uses Doctrine.
 */
final class SymfonyBootstrap implements BootstrapInterface, RequestHooksInterface
{
    private HttpKernelInterface $kernel;

    public function boot(string $appDir, string $appEnv, bool $debug): object
    {
        AppEnvironment::requireAutoloader($appDir, Kernel::class, 'symfony/http-kernel');
        AppEnvironment::set('APP_ENV', $appEnv);
        AppEnvironment::set('APP_DEBUG', $debug ? '1' : '0');
        $this->loadDotenv($appDir);
        if ($debug && class_exists(Debug::class)) {
            Debug::enable();
        }
        self::trustProxiesAndHosts();

        $class = AppEnvironment::get('APP_KERNEL_CLASS') ?: 'App\\Kernel';
        if (!class_exists($class)) {
            throw new BootstrapException(
                "Symfony kernel class $class not found (set APP_KERNEL_CLASS, or autoload App\\Kernel from src/)"
            );
        }
        if (!is_subclass_of($class, HttpKernelInterface::class)) {
            throw new BootstrapException("$class is not a " . HttpKernelInterface::class);
        }
        $kernel = new $class($appEnv, $debug);
        if ($kernel instanceof Kernel) {
            $kernel->boot();
            self::withoutStreamedResponseListener($kernel);
        }
        $this->kernel = $kernel;
        return $kernel;
    }

    public function beforeRequest(Request $request): void
    {
    }

    public function afterRequest(): void
    {
        if (!$this->kernel instanceof Kernel) {
            return;
        }
        // After a request, Kernel::boot() only runs the services_resetter
        // (which it would otherwise run at the start of the next request).
        $this->kernel->boot();
        $container = $this->kernel->getContainer();
        if ($container->has('doctrine') && $container->initialized('doctrine')) {
            self::clearEntityManagers($container->get('doctrine'));
        }
    }

    private function loadDotenv(string $appDir): void
    {
        $env = $appDir . '/.env';
        if (!class_exists(Dotenv::class)
            || (!is_file($env) && !is_file("$env.dist") && !is_file("$env.local.php"))
        ) {
            return;
        }
        $dotenv = new Dotenv();
        if (!is_file($env) && !is_file("$env.local.php")) {
            $env .= '.dist';
        }
        $dotenv->bootEnv($env);
    }

    private static function trustProxiesAndHosts(): void
    {
        $proxies = AppEnvironment::get('TRUSTED_PROXIES');
        if ($proxies !== null && trim($proxies) !== '') {
            Request::setTrustedProxies(
                array_values(array_filter(array_map('trim', explode(',', $proxies)), 'strlen')),
                Request::HEADER_X_FORWARDED_FOR | Request::HEADER_X_FORWARDED_PORT | Request::HEADER_X_FORWARDED_PROTO
            );
        }
        $hosts = AppEnvironment::get('TRUSTED_HOSTS');
        if ($hosts !== null && trim($hosts) !== '') {
            Request::setTrustedHosts([trim($hosts)]);
        }
    }

    /**
     * FrameworkBundle's StreamedResponseListener sends a StreamedResponse
     * itself with header() and echo during kernel.response; the bridge
     * sends every response, so that listener is taken out.
     */
    private static function withoutStreamedResponseListener(Kernel $kernel): void
    {
        $container = $kernel->getContainer();
        if (!$container->has('event_dispatcher')) {
            return;
        }
        $dispatcher = $container->get('event_dispatcher');
        foreach ($dispatcher->getListeners(KernelEvents::RESPONSE) as $listener) {
            if (is_array($listener) && ($listener[0] ?? null) instanceof StreamedResponseListener) {
                $dispatcher->removeListener(KernelEvents::RESPONSE, $listener);
            }
        }
    }

    private static function clearEntityManagers(object $doctrine): void
    {
        if (!method_exists($doctrine, 'getManagers')) {
            return;
        }
        foreach ($doctrine->getManagers() as $name => $manager) {
            if (method_exists($manager, 'isOpen') && !$manager->isOpen() && method_exists($doctrine, 'resetManager')) {
                $doctrine->resetManager($name);
            } elseif (method_exists($manager, 'clear')) {
                $manager->clear();
            }
        }
    }
}

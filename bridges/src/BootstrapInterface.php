<?php

declare(strict_types=1);

namespace Ppm\Bridge;

/**
 * Builds an application for the httpKernel bridge, once per worker.
 *
 * --bootstrap=symfony and --bootstrap=laravel are implementations of this
 * interface; a custom one is any class implementing it with a constructor
 * without arguments, named by its fully-qualified name with --bootstrap and
 * autoloadable by the application's vendor/autoload.php. It may also
 * implement RequestHooksInterface to run code around each request.
 */
interface BootstrapInterface
{
    /**
     * Builds (and ideally boots) the application. Throw to fail the
     * worker's start; the message reaches the master (ppm status, ppm
     * restart).
     *
     * @return object the kernel that handles requests: a Symfony
     *         \Symfony\Component\HttpKernel\HttpKernelInterface (its
     *         TerminableInterface is honoured) or a Laravel
     *         \Illuminate\Contracts\Http\Kernel
     */
    public function boot(string $appDir, string $appEnv, bool $debug): object;
}

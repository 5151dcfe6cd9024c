<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\BootstrapException;
use Ppm\Runtime\Response;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response as HttpFoundationResponse;
use Symfony\Component\HttpKernel\HttpKernelInterface;
use Symfony\Component\HttpKernel\TerminableInterface;

/**
 * Symfony and Laravel applications, and any HttpKernel-style application
 * built by a bootstrap class.
 *
 * --bootstrap=symfony (the default), --bootstrap=laravel, or the class name
 * of a BootstrapInterface. The bootstrap builds the kernel once; per
 * request the bridge builds the framework's request from the superglobals,
 * lets the kernel handle it, hands the response to the worker, and after
 * the response has been sent terminates the kernel (kernel.terminate,
 * terminable middleware) and runs the bootstrap's afterRequest() hook.
 */
final class HttpKernelBridge implements BridgeInterface
{
    private const BUILT_IN = [
        'symfony' => SymfonyBootstrap::class,
        'laravel' => LaravelBootstrap::class,
    ];

    private const CLASS_NAME = '/^[A-Za-z_\x80-\xff][\w\x80-\xff]*(\\\\[A-Za-z_\x80-\xff][\w\x80-\xff]*)*$/D';

    private object $kernel;

    private bool $laravel = false;

    private ?RequestHooksInterface $hooks = null;

    private KernelRequestFactory $requests;

    private KernelResponseMapper $responses;

    private ?Request $request = null;

    private ?HttpFoundationResponse $response = null;

    public function bootstrap(string $bootstrap, string $appDir, string $appEnv, bool $debug): void
    {
        $bootstrapper = self::bootstrapper($bootstrap === '' ? 'symfony' : $bootstrap);
        $kernel = $bootstrapper->boot($appDir, $appEnv, $debug);
        $this->laravel = interface_exists(\Illuminate\Contracts\Http\Kernel::class)
            && $kernel instanceof \Illuminate\Contracts\Http\Kernel;
        if (!$this->laravel && !$kernel instanceof HttpKernelInterface) {
            throw new BootstrapException(
                get_class($bootstrapper) . '::boot() returned ' . get_debug_type($kernel) . ', expected a '
                . HttpKernelInterface::class . ' or an Illuminate\Contracts\Http\Kernel'
            );
        }
        $this->kernel = $kernel;
        $this->hooks = $bootstrapper instanceof RequestHooksInterface ? $bootstrapper : null;
        $this->requests = $this->laravel
            ? new KernelRequestFactory(\Illuminate\Http\Request::class)
            : new KernelRequestFactory();
        $this->responses = new KernelResponseMapper();
    }

    public function scriptName(): string
    {
        return '/index.php';
    }

    public function handle(): ?Response
    {
        $request = $this->requests->create();
        $this->request = $request;
        $this->hooks?->beforeRequest($request);
        $response = $this->laravel
            ? $this->kernel->handle($request)
            : $this->kernel->handle($request, HttpKernelInterface::MAIN_REQUEST, true);
        if (!$response instanceof HttpFoundationResponse) {
            throw new \UnexpectedValueException(
                get_class($this->kernel) . '::handle() returned ' . get_debug_type($response)
                . ', expected a ' . HttpFoundationResponse::class
            );
        }
        $this->response = $response;
        return $this->responses->map($response, $request->getRealMethod() === 'HEAD');
    }

    public function terminate(): void
    {
        try {
            if ($this->request !== null && $this->response !== null) {
                if ($this->laravel || $this->kernel instanceof TerminableInterface) {
                    $this->kernel->terminate($this->request, $this->response);
                }
            }
        } finally {
            $this->request = null;
            $this->response = null;
            $this->hooks?->afterRequest();
        }
    }

    private static function bootstrapper(string $name): BootstrapInterface
    {
        $class = self::BUILT_IN[strtolower($name)] ?? ltrim($name, '\\');
        if (!preg_match(self::CLASS_NAME, $class)) {
            throw new BootstrapException(self::unknown($name));
        }
        if (!class_exists($class)) {
            throw new BootstrapException(
                self::unknown($name) . " (no class $class; is it autoloadable by vendor/autoload.php?)"
            );
        }
        if (!is_subclass_of($class, BootstrapInterface::class)) {
            throw new BootstrapException("bootstrap class $class does not implement " . BootstrapInterface::class);
        }
        return new $class();
    }

    private static function unknown(string $name): string
    {
        return "unknown httpKernel bootstrap '$name': use symfony, laravel or the class name of a "
            . BootstrapInterface::class;
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

use Ppm\Bridge\BridgeFactory;
use Ppm\Bridge\BridgeInterface;

/**
 * The worker script of the native runtime: bootstraps the application
 * through its bridge, then hands every request to it.
 *
 * ppm's SAPI provides ppm_worker_config(), ppm_configure(),
 * ppm_boot_error() and ppm_handle_request(), which blocks for the next
 * request, fills the superglobals the way PHP-FPM does, calls the handler
 * and resets the request state afterwards. Uncaught exceptions, exit()
 * and fatal errors are the SAPI's business (doc/bridges.md, "Defined
 * outcomes"); this class only turns bridge responses into native output.
 */
final class NativeWorker
{
    private function __construct(private BridgeInterface $bridge)
    {
    }

    public static function main(): void
    {
        $worker = self::boot();
        $handler = static fn () => $worker->handle();
        while (ppm_handle_request($handler)) {
            // one request per call; false when the master stops the worker
        }
    }

    private static function boot(): self
    {
        try {
            $config = json_decode(ppm_worker_config(), true, 16, JSON_THROW_ON_ERROR);
            $appDir = rtrim((string) $config['app_dir'], '/') ?: '/';
            $autoload = $appDir . '/vendor/autoload.php';
            if (is_file($autoload)) {
                (static function (string $__file): void {
                    require_once $__file;
                })($autoload);
            }
            $bridge = BridgeFactory::create((string) $config['bridge']);
            $bridge->bootstrap(
                (string) $config['bootstrap'],
                $appDir,
                (string) $config['app_env'],
                (bool) $config['debug']
            );
            if (method_exists($bridge, 'documentRoot')) {
                $documentRoot = (string) $bridge->documentRoot();
            } else {
                $documentRoot = is_dir($appDir . '/public') ? $appDir . '/public' : $appDir;
            }
            // What the bootstrap added to $_SERVER (e.g. Dotenv) stays in
            // every request's $_SERVER.
            ppm_configure(
                RequestGlobals::withoutRequestKeys($_SERVER),
                rtrim($documentRoot, '/'),
                $bridge->scriptName()
            );
        } catch (\Throwable $e) {
            ppm_boot_error($e instanceof BootstrapException ? $e->getMessage() : ErrorFormatter::throwable($e));
            exit(1);
        }
        return new self($bridge);
    }

    private function handle(): void
    {
        $response = $this->bridge->handle();
        if ($response !== null) {
            NativeResponse::emit($response);
        }
        if ($this->bridge instanceof \Ppm\Bridge\HttpKernelBridge) {
            // Terminate work runs after the client has its answer.
            fastcgi_finish_request();
        }
        $this->bridge->terminate();
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\BootstrapException;
use Ppm\Runtime\Response;

/**
 * A PHP file that returns a callable, no framework. Per request the
 * callable is called without arguments; it writes the response like a
 * classic script under PHP-FPM (echo, header(), http_response_code(),
 * setcookie(), sessions), or returns a \Ppm\Runtime\Response.
 */
final class CallableBridge implements BridgeInterface
{
    /** @var callable */
    private $handler;

    private string $appDir = '';

    private string $scriptName = '/';

    public function bootstrap(string $bootstrap, string $appDir, string $appEnv, bool $debug): void
    {
        if ($bootstrap === '') {
            throw new BootstrapException(
                'the callable bridge needs --bootstrap=FILE (a PHP file returning a callable)'
            );
        }
        $file = $bootstrap[0] === '/' ? $bootstrap : $appDir . '/' . $bootstrap;
        if (!is_file($file)) {
            throw new BootstrapException("bootstrap file not found: $file");
        }
        $file = (string) realpath($file);
        $root = (string) realpath($appDir);
        $this->appDir = $root;
        $this->scriptName = str_starts_with($file, $root . '/') ? substr($file, strlen($root)) : '/' . basename($file);
        $handler = (static fn (string $__file) => require $__file)($file);
        if (!is_callable($handler)) {
            throw new BootstrapException("$file must return a callable, it returned " . get_debug_type($handler));
        }
        $this->handler = $handler;
    }

    public function scriptName(): string
    {
        return $this->scriptName;
    }

    public function documentRoot(): string
    {
        return $this->appDir;
    }

    public function handle(): ?Response
    {
        $result = ($this->handler)();
        return $result instanceof Response ? $result : null;
    }

    public function terminate(): void
    {
    }
}

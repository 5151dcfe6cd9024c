<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\BootstrapException;
use Ppm\Runtime\Response;
use Psr\Http\Message\ResponseInterface;
use Psr\Http\Message\StreamInterface;

/**
 * Any PSR-15 request handler. The bootstrap file (relative to app_dir)
 * returns the handler; app_dir/vendor/autoload.php must autoload it, the
 * PSR-7/PSR-17 implementation and psr/http-server-handler.
 */
final class Psr15Bridge implements BridgeInterface
{
    private const CHUNK_SIZE = 65536;

    private object $handler;

    private Psr17Factories $factories;

    public function bootstrap(string $bootstrap, string $appDir, string $appEnv, bool $debug): void
    {
        if (!is_file($appDir . '/vendor/autoload.php')) {
            throw new BootstrapException(
                "the psr15 bridge needs $appDir/vendor/autoload.php "
                . '(autoloading the application, a PSR-7/PSR-17 implementation and psr/http-server-handler)'
            );
        }
        if ($bootstrap === '') {
            throw new BootstrapException(
                'the psr15 bridge needs --bootstrap=FILE (a PHP file returning a PSR-15 handler)'
            );
        }
        $file = $bootstrap[0] === '/' ? $bootstrap : $appDir . '/' . $bootstrap;
        if (!is_file($file)) {
            throw new BootstrapException("bootstrap file not found: $file");
        }
        $this->factories = Psr17Factories::detect();
        $handler = (static fn (string $__file) => require $__file)($file);
        if (!is_object($handler) || !method_exists($handler, 'handle')) {
            throw new BootstrapException(
                "$file must return a Psr\\Http\\Server\\RequestHandlerInterface, "
                . 'it returned ' . get_debug_type($handler)
            );
        }
        $this->handler = $handler;
    }

    public function scriptName(): string
    {
        return '/index.php';
    }

    public function handle(): ?Response
    {
        $response = $this->handler->handle($this->factories->serverRequestFromGlobals());
        if (!$response instanceof ResponseInterface) {
            throw new \UnexpectedValueException(
                get_class($this->handler) . '::handle() returned ' . get_debug_type($response)
                . ', expected a ' . ResponseInterface::class
            );
        }
        $body = $response->getBody();
        $size = $body->getSize();
        return new Response(
            $response->getStatusCode(),
            $response->getHeaders(),
            $size !== null && $size <= self::CHUNK_SIZE ? (string) $body : self::chunks($body)
        );
    }

    public function terminate(): void
    {
    }

    /** @return \Generator<int, string> */
    private static function chunks(StreamInterface $body): \Generator
    {
        if ($body->isSeekable()) {
            $body->rewind();
        }
        while (!$body->eof()) {
            $chunk = $body->read(self::CHUNK_SIZE);
            if ($chunk === '') {
                break;
            }
            yield $chunk;
        }
    }
}

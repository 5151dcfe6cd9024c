<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\BootstrapException;
use Ppm\Runtime\Response;

/** Symfony and Laravel (--bootstrap=symfony|laravel). Placeholder. */
final class HttpKernelBridge implements BridgeInterface
{
    public function bootstrap(string $bootstrap, string $appDir, string $appEnv, bool $debug): void
    {
        throw new BootstrapException('httpKernel bridge not implemented yet');
    }

    public function scriptName(): string
    {
        return '/index.php';
    }

    public function handle(): ?Response
    {
        throw new \LogicException('httpKernel bridge not implemented yet');
    }

    public function terminate(): void
    {
    }
}

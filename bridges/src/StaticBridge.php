<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\Response;

/** No application: static files are served by the master, everything else is 404. */
final class StaticBridge implements BridgeInterface
{
    public function bootstrap(string $bootstrap, string $appDir, string $appEnv, bool $debug): void
    {
    }

    public function scriptName(): string
    {
        return '/index.php';
    }

    public function handle(): ?Response
    {
        return new Response(404, ['Content-Type' => 'text/plain; charset=UTF-8'], "404 Not Found\n");
    }

    public function terminate(): void
    {
    }
}

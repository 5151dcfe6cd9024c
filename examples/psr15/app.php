<?php

/**
 * A PSR-15 application for ppm:
 *
 *     ppm start examples/psr15 --bridge=psr15 --bootstrap=app.php
 *
 * Runs once per worker and returns the request handler; the worker builds
 * a PSR-7 request per request with the PSR-17 factory it finds
 * (Nyholm's here, see vendor/autoload.php).
 */

declare(strict_types=1);

use App\HelloHandler;
use Nyholm\Psr7\Factory\Psr17Factory;

$factory = new Psr17Factory();

return new HelloHandler($factory, $factory);

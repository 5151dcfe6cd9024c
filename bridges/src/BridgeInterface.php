<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\Response;

/**
 * Connects the worker to an application.
 *
 * A custom bridge is any class implementing this interface with a
 * constructor without arguments, named by its fully-qualified name with
 * --bridge and autoloadable by the application's vendor/autoload.php.
 * It may also define `documentRoot(): string` to set DOCUMENT_ROOT
 * (default: app_dir/public if it exists, else app_dir).
 */
interface BridgeInterface
{
    /**
     * Boots the application, once per worker. Throw to fail the worker's
     * start; the message reaches the master (ppm status, ppm restart).
     */
    public function bootstrap(string $bootstrap, string $appDir, string $appEnv, bool $debug): void;

    /** SCRIPT_NAME (and PHP_SELF) for $_SERVER, e.g. '/index.php'. */
    public function scriptName(): string;

    /**
     * Handles one request; PHP has filled the superglobals and
     * php://input, as under PHP-FPM. Returns the response, or null
     * when the application wrote it with echo, header() and
     * http_response_code().
     */
    public function handle(): ?Response;

    /** Work after the response has been sent (the client already has it). */
    public function terminate(): void;
}

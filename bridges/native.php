<?php

/**
 * Entry point of the native runtime: ppm hosts PHP through its own SAPI
 * and runs this file once per generation (again after exit(), a fatal
 * error, a timeout or out-of-memory). PHP itself fills the superglobals,
 * php://input, uploads, headers and sessions; see src/NativeWorker.php.
 */

declare(strict_types=1);

require __DIR__ . '/autoload.php';

\Ppm\Runtime\NativeWorker::main();

<?php

/**
 * ppm worker entry point.
 *
 * The master runs this file with php-cgi (or php as a fallback) and hands it
 * the control channel on fd 3. Everything else lives in src/, one class per
 * file, named after the class without its namespace (the master embeds a
 * flat list of files, see FILES).
 */

declare(strict_types=1);

require __DIR__ . '/autoload.php';
require __DIR__ . '/src/polyfills.php';

exit(\Ppm\Runtime\Worker::main());

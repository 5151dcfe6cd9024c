<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * A bootstrap failure with a message meant for the operator as is
 * (bad bridge name, missing bootstrap file...). Other throwables are
 * reported the way PHP reports an uncaught exception.
 */
final class BootstrapException extends \RuntimeException
{
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/** A request the worker refuses (bad framing); answered, then the connection closes. */
final class HttpError extends \RuntimeException
{
    public function __construct(public readonly int $status, string $message)
    {
        parent::__construct($message);
    }
}

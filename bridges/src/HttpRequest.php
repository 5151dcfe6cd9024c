<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/** One parsed HTTP/1.x request, as the master (or a client) sent it. */
final class HttpRequest
{
    /**
     * @param list<array{0: string, 1: string}> $headers name and value, in order,
     *        without the master's private X-Ppm-* headers
     * @param list<array{0: string, 1: string}>|null $cgi the FastCGI
     *        parameters, in order, when the request came over FastCGI:
     *        they, not the HTTP request, make $_SERVER
     */
    public function __construct(
        public readonly string $method,
        public readonly string $target,
        public readonly string $protocol,
        public readonly array $headers,
        public readonly string $body,
        public readonly bool $keepAlive,
        public readonly string $remoteAddr,
        public readonly string $remotePort,
        public readonly string $serverAddr,
        public readonly string $serverPort,
        public readonly bool $https,
        public readonly ?array $cgi = null,
    ) {
    }

    /** All values of a header, case-insensitively. */
    public function header(string $name): array
    {
        $values = [];
        foreach ($this->headers as [$key, $value]) {
            if (strcasecmp($key, $name) === 0) {
                $values[] = $value;
            }
        }
        return $values;
    }

    public function path(): string
    {
        $pos = strpos($this->target, '?');
        return $pos === false ? $this->target : substr($this->target, 0, $pos);
    }

    public function query(): string
    {
        $pos = strpos($this->target, '?');
        return $pos === false ? '' : substr($this->target, $pos + 1);
    }
}

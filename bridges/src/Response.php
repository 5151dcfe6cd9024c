<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * An HTTP response handed back by a bridge.
 *
 * Immutable. Headers map a name to a list of values. The body is one of:
 * - a string;
 * - an iterable of strings (read lazily, chunk by chunk);
 * - a callable that echoes the body; it may call flush() to stream.
 *
 * Headers set with header()/setcookie() are merged in: a header named here
 * replaces a native one of the same name, except Set-Cookie, which adds.
 */
final class Response
{
    private int $status;

    /** @var array<string, list<string>> */
    private array $headers = [];

    /** @var string|iterable<string>|callable */
    private $body;

    /**
     * @param array<string, string|list<string>> $headers
     * @param string|iterable<string>|callable $body
     */
    public function __construct(int $status = 200, array $headers = [], $body = '')
    {
        if ($status < 100 || $status > 999) {
            throw new \InvalidArgumentException("invalid HTTP status code $status");
        }
        if (!is_string($body) && !is_iterable($body) && !is_callable($body)) {
            throw new \InvalidArgumentException(
                'response body must be a string, an iterable of strings or a callable, got ' . get_debug_type($body)
            );
        }
        $this->status = $status;
        $this->body = $body;
        foreach ($headers as $name => $values) {
            $this->headers[(string) $name] = self::normalizeValues((string) $name, $values);
        }
    }

    public function status(): int
    {
        return $this->status;
    }

    /** @return array<string, list<string>> */
    public function headers(): array
    {
        return $this->headers;
    }

    /** @return list<string> the values of a header, case-insensitively */
    public function header(string $name): array
    {
        $values = [];
        foreach ($this->headers as $key => $list) {
            if (strcasecmp($key, $name) === 0) {
                array_push($values, ...$list);
            }
        }
        return $values;
    }

    /** @return string|iterable<string>|callable */
    public function body()
    {
        return $this->body;
    }

    public function withStatus(int $status): self
    {
        return new self($status, $this->headers, $this->body);
    }

    /** @param string|list<string> $values */
    public function withHeader(string $name, $values): self
    {
        $headers = $this->headers;
        foreach (array_keys($headers) as $key) {
            if (strcasecmp((string) $key, $name) === 0) {
                unset($headers[$key]);
            }
        }
        $headers[$name] = self::normalizeValues($name, $values);
        return new self($this->status, $headers, $this->body);
    }

    /** @param string|iterable<string>|callable $body */
    public function withBody($body): self
    {
        return new self($this->status, $this->headers, $body);
    }

    /**
     * Writes the body to PHP's output.
     *
     * @internal called by the worker
     */
    public function emitBody(): void
    {
        $body = $this->body;
        if (is_string($body)) {
            echo $body;
        } elseif (is_callable($body)) {
            $body();
        } else {
            foreach ($body as $chunk) {
                echo $chunk;
            }
        }
    }

    /**
     * @param mixed $values
     * @return list<string>
     */
    private static function normalizeValues(string $name, $values): array
    {
        if (!preg_match('/^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$/D', $name)) {
            throw new \InvalidArgumentException("invalid header name '$name'");
        }
        $list = [];
        foreach (is_array($values) ? $values : [$values] as $value) {
            $value = (string) $value;
            if (strpbrk($value, "\r\n\0") !== false) {
                throw new \InvalidArgumentException("header '$name' has a value with CR, LF or NUL");
            }
            $list[] = $value;
        }
        return $list;
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Parses HTTP/1.x requests out of a connection buffer.
 *
 * The master sends normalized requests (Content-Length bodies, never
 * chunked); clients of a standalone worker get 400/411/413/431 answers for
 * what it does not take.
 */
final class RequestParser
{
    public const MAX_HEAD = 65536;

    private const PRIVATE_HEADERS = [
        'x-ppm-remote-addr',
        'x-ppm-remote-port',
        'x-ppm-server-addr',
        'x-ppm-server-port',
        'x-ppm-https',
        'x-ppm-request-target',
        'x-ppm-cgi',
    ];

    public function __construct(private bool $trustMaster, private int $maxBody)
    {
    }

    /**
     * @param array{0: string, 1: string, 2: string, 3: string} $peer
     *        remote address, remote port, server address, server port of the connection
     * @return array{0: ?HttpRequest, 1: int, 2: bool} the request (null while incomplete),
     *         the bytes it used, whether the client waits for "100 Continue"
     * @throws HttpError
     */
    public function parse(string $buffer, array $peer): array
    {
        $end = strpos($buffer, "\r\n\r\n");
        // The master bounds what it sends by its own header limits.
        $maxHead = $this->trustMaster ? PHP_INT_MAX : self::MAX_HEAD;
        if ($end === false || $end > $maxHead) {
            if (strlen($buffer) > $maxHead) {
                throw new HttpError(431, 'request head larger than ' . self::MAX_HEAD . ' bytes');
            }
            return [null, 0, false];
        }
        $lines = explode("\r\n", substr($buffer, 0, $end));
        $requestLine = array_shift($lines);
        if (!preg_match('#^([!\#$%&\'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(1\.[01])$#D', $requestLine, $m)) {
            throw new HttpError(400, 'malformed request line');
        }
        [, $method, $target, $version] = $m;
        $target = $this->originForm($target);

        $headers = [];
        $private = [];
        foreach ($lines as $line) {
            if (!preg_match('/^([!#$%&\'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/D', $line, $h)
                || strpbrk($h[2], "\r\n\0") !== false
            ) {
                throw new HttpError(400, 'malformed header line');
            }
            $lower = strtolower($h[1]);
            if (in_array($lower, self::PRIVATE_HEADERS, true)) {
                $private[$lower] = $h[2];
                continue;
            }
            $headers[] = [$h[1], $h[2]];
        }

        $length = $this->contentLength($headers);
        $total = $end + 4 + $length;
        if (strlen($buffer) < $total) {
            $expect = !$this->trustMaster && $this->expectsContinue($headers);
            return [null, 0, $expect];
        }

        [$remoteAddr, $remotePort, $serverAddr, $serverPort] = $peer;
        $https = false;
        $cgi = null;
        if ($this->trustMaster) {
            $cgi = isset($private['x-ppm-cgi']) ? self::cgiVariables($private['x-ppm-cgi']) : null;
            $remoteAddr = $private['x-ppm-remote-addr'] ?? $remoteAddr;
            $remotePort = $private['x-ppm-remote-port'] ?? $remotePort;
            $serverAddr = $private['x-ppm-server-addr'] ?? $serverAddr;
            $serverPort = $private['x-ppm-server-port'] ?? $serverPort;
            $https = strcasecmp($private['x-ppm-https'] ?? '', 'on') === 0;
            // The target as the client sent it, where it holds bytes the
            // master percent-encoded for its own URI type (nginx passes them).
            $target = $private['x-ppm-request-target'] ?? $target;
        }

        $request = new HttpRequest(
            $method,
            $target,
            'HTTP/' . $version,
            $headers,
            (string) substr($buffer, $end + 4, $length),
            $this->keepAlive($version, $headers),
            $remoteAddr,
            $remotePort,
            $serverAddr,
            $serverPort,
            $https,
            $cgi,
        );
        return [$request, $total, false];
    }

    /**
     * The FastCGI parameters of a request that came to the master over
     * FastCGI (src/fastcgi/params.rs encodes them).
     *
     * @return list<array{0: string, 1: string}>
     */
    private static function cgiVariables(string $encoded): array
    {
        $variables = [];
        foreach ($encoded === '' ? [] : explode('&', $encoded) as $pair) {
            [$name, $value] = explode('=', $pair, 2) + [1 => ''];
            $variables[] = [rawurldecode($name), rawurldecode($value)];
        }
        return $variables;
    }

    private function originForm(string $target): string
    {
        if ($target[0] === '/' || $target === '*') {
            return $target;
        }
        if (preg_match('#^https?://[^/?\#]*([^\#]*)#i', $target, $m)) {
            $rest = $m[1];
            return $rest === '' ? '/' : ($rest[0] === '?' ? '/' . $rest : $rest);
        }
        throw new HttpError(400, 'malformed request target');
    }

    /** @param list<array{0: string, 1: string}> $headers */
    private function contentLength(array $headers): int
    {
        $length = null;
        foreach ($headers as [$name, $value]) {
            $lower = strtolower($name);
            if ($lower === 'transfer-encoding') {
                throw new HttpError(411, 'Transfer-Encoding is not supported, send Content-Length');
            }
            if ($lower !== 'content-length') {
                continue;
            }
            if (!preg_match('/^\d{1,18}$/D', $value) || ($length !== null && $length !== (int) $value)) {
                throw new HttpError(400, 'invalid Content-Length');
            }
            $length = (int) $value;
        }
        $length ??= 0;
        if (!$this->trustMaster && $this->maxBody > 0 && $length > $this->maxBody) {
            throw new HttpError(413, "request body larger than {$this->maxBody} bytes");
        }
        return $length;
    }

    /** @param list<array{0: string, 1: string}> $headers */
    private function keepAlive(string $version, array $headers): bool
    {
        $tokens = [];
        foreach ($headers as [$name, $value]) {
            if (strcasecmp($name, 'connection') === 0) {
                foreach (explode(',', strtolower($value)) as $token) {
                    $tokens[trim($token)] = true;
                }
            }
        }
        if (isset($tokens['close'])) {
            return false;
        }
        return $version === '1.1' || isset($tokens['keep-alive']);
    }

    /** @param list<array{0: string, 1: string}> $headers */
    private function expectsContinue(array $headers): bool
    {
        foreach ($headers as [$name, $value]) {
            if (strcasecmp($name, 'expect') === 0 && strcasecmp(trim($value), '100-continue') === 0) {
                return true;
            }
        }
        return false;
    }
}

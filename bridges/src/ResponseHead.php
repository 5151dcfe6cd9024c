<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Builds the status line and headers of a response from what the
 * application set: header()/http_response_code() (php-cgi only) and the
 * bridge's Response object.
 */
final class ResponseHead
{
    private bool $native;

    public function __construct(private SessionGuard $session, private bool $addDate)
    {
        $this->native = PHP_SAPI !== 'cli';
    }

    /**
     * @param Response|null $response the bridge's response, if any
     * @param bool $withNative whether header()/http_response_code() count
     * @param int|null $contentLength the body length, null when streamed
     * @param bool $hasBody whether there is (or will be) body output
     * @return array{0: int, 1: string, 2: bool, 3: bool, 4: ?int} the status, the head
     *         (blank line included), whether the connection closes after it, whether
     *         the body is chunked, and the Content-Length a streamed body was declared
     *         with (the application's own Content-Length header, kept so that a
     *         download keeps its size; the writer holds the body to it)
     */
    public function build(
        HttpRequest $request,
        ?Response $response,
        bool $withNative,
        ?int $contentLength,
        bool $hasBody,
        bool $close,
    ): array {
        $status = 200;
        $headers = [];
        if ($withNative) {
            $code = http_response_code();
            if (is_int($code) && $code > 0) {
                $status = $code;
            }
            if ($this->native) {
                foreach (headers_list() as $line) {
                    $parts = explode(':', $line, 2);
                    $headers[] = [trim($parts[0]), ltrim($parts[1] ?? '')];
                }
            }
        }
        if ($response !== null) {
            $status = $response->status();
            foreach ($response->headers() as $name => $values) {
                if (strcasecmp($name, 'Set-Cookie') !== 0) {
                    $headers = self::without($headers, $name);
                }
                foreach ($values as $value) {
                    $headers[] = [$name, $value];
                }
            }
        }

        $declaredLength = null;
        $hasContentType = false;
        $hasDate = false;
        $kept = [];
        foreach ($this->session->filterHeaders($headers) as [$name, $value]) {
            switch (strtolower($name)) {
                case 'status': // CGI style "Status: 404 Not Found"
                    if (preg_match('/^([1-9]\d\d)\b/', $value, $m)) {
                        $status = (int) $m[1];
                    }
                    continue 2;
                case 'content-length':
                    $declaredLength = $value;
                    continue 2;
                case 'transfer-encoding':
                case 'connection':
                case 'keep-alive':
                    continue 2;
                case 'content-type':
                    $hasContentType = true;
                    break;
                case 'date':
                    $hasDate = true;
                    break;
            }
            $kept[] = [$name, $value];
        }

        $noBody = StatusText::forbidsBody($status);
        if (!$noBody && $hasBody && !$hasContentType) {
            $type = self::defaultContentType();
            if ($type !== '') {
                $kept[] = ['Content-Type', $type];
            }
        }
        $chunked = false;
        $fixedLength = null;
        if (!$noBody) {
            if ($contentLength === null
                && $request->method !== 'HEAD'
                && $declaredLength !== null
                && preg_match('/^\d{1,18}$/D', $declaredLength)
            ) {
                $fixedLength = (int) $declaredLength;
                $kept[] = ['Content-Length', (string) $fixedLength];
            } elseif ($contentLength === null) {
                if ($request->protocol === 'HTTP/1.1') {
                    $kept[] = ['Transfer-Encoding', 'chunked'];
                    $chunked = true;
                } else {
                    $close = true; // HTTP/1.0: the end of the body is the end of the connection
                }
            } elseif ($contentLength === 0 && $request->method === 'HEAD' && $declaredLength !== null) {
                $kept[] = ['Content-Length', $declaredLength];
            } else {
                $kept[] = ['Content-Length', (string) $contentLength];
            }
        }
        if ($this->addDate && !$hasDate) {
            $kept[] = ['Date', gmdate('D, d M Y H:i:s') . ' GMT'];
        }
        if ($close) {
            $kept[] = ['Connection', 'close'];
        } elseif ($request->protocol === 'HTTP/1.0') {
            $kept[] = ['Connection', 'keep-alive'];
        }

        $head = "HTTP/1.1 $status " . StatusText::of($status) . "\r\n";
        foreach ($kept as [$name, $value]) {
            $head .= "$name: $value\r\n";
        }
        return [$status, $head . "\r\n", $close, $chunked, $fixedLength];
    }

    /** What PHP would send: default_mimetype, with default_charset for text types. */
    private static function defaultContentType(): string
    {
        $mime = (string) ini_get('default_mimetype');
        $charset = (string) ini_get('default_charset');
        if ($mime !== '' && $charset !== '' && strncasecmp($mime, 'text/', 5) === 0) {
            return "$mime; charset=$charset";
        }
        return $mime;
    }

    /**
     * @param list<array{0: string, 1: string}> $headers
     * @return list<array{0: string, 1: string}>
     */
    private static function without(array $headers, string $name): array
    {
        return array_values(array_filter(
            $headers,
            static fn (array $header): bool => strcasecmp($header[0], $name) !== 0
        ));
    }
}

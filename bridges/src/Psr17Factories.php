<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\BootstrapException;
use Ppm\Runtime\RequestContext;
use Psr\Http\Message\ServerRequestInterface;
use Psr\Http\Message\UploadedFileInterface;

/**
 * The PSR-17 factories the application ships, and the PSR-7 server request
 * built with them from the superglobals.
 */
final class Psr17Factories
{
    /** @var list<list<class-string>> server request, stream and uploaded file factories */
    private const CANDIDATES = [
        ['Nyholm\Psr7\Factory\Psr17Factory'],
        ['GuzzleHttp\Psr7\HttpFactory'],
        [
            'Laminas\Diactoros\ServerRequestFactory',
            'Laminas\Diactoros\StreamFactory',
            'Laminas\Diactoros\UploadedFileFactory',
        ],
        [
            'Slim\Psr7\Factory\ServerRequestFactory',
            'Slim\Psr7\Factory\StreamFactory',
            'Slim\Psr7\Factory\UploadedFileFactory',
        ],
        [
            'HttpSoft\Message\ServerRequestFactory',
            'HttpSoft\Message\StreamFactory',
            'HttpSoft\Message\UploadedFileFactory',
        ],
    ];

    private function __construct(
        private object $serverRequests,
        private object $streams,
        private object $uploadedFiles,
    ) {
    }

    public static function detect(): self
    {
        foreach (self::CANDIDATES as $classes) {
            foreach ($classes as $class) {
                if (!class_exists($class)) {
                    continue 2;
                }
            }
            $objects = array_map(static fn (string $class): object => new $class(), $classes);
            return new self($objects[0], $objects[1] ?? $objects[0], $objects[2] ?? $objects[0]);
        }
        throw new BootstrapException(
            'the psr15 bridge found no PSR-17 factory: vendor/autoload.php must autoload one of '
            . 'nyholm/psr7, guzzlehttp/psr7, laminas/laminas-diactoros, slim/psr7, httpsoft/http-message'
        );
    }

    public function serverRequestFromGlobals(): ServerRequestInterface
    {
        $server = $_SERVER;
        $method = (string) ($server['REQUEST_METHOD'] ?? 'GET');
        $request = $this->serverRequests->createServerRequest($method, self::uri($server), $server);
        $protocol = (string) ($server['SERVER_PROTOCOL'] ?? 'HTTP/1.1');
        if (str_starts_with($protocol, 'HTTP/')) {
            $request = $request->withProtocolVersion(substr($protocol, 5));
        }
        foreach (self::headers($server) as $name => $value) {
            $request = $request->withHeader($name, $value);
        }
        $request = $request
            ->withCookieParams($_COOKIE)
            ->withQueryParams($_GET)
            ->withUploadedFiles($this->uploadedFileTree($_FILES))
            ->withBody($this->streams->createStream(RequestContext::body()));
        if ($method === 'POST' && self::isForm((string) ($server['CONTENT_TYPE'] ?? ''))) {
            $request = $request->withParsedBody($_POST);
        }
        return $request;
    }

    /** @param array<string, mixed> $server */
    private static function uri(array $server): string
    {
        $scheme = ($server['HTTPS'] ?? '') === 'on' ? 'https' : 'http';
        $host = (string) ($server['HTTP_HOST'] ?? '');
        if ($host === '') {
            $host = (string) ($server['SERVER_NAME'] ?? 'localhost');
            $port = (string) ($server['SERVER_PORT'] ?? '');
            if ($port !== '' && $port !== ($scheme === 'https' ? '443' : '80')) {
                $host .= ':' . $port;
            }
        }
        return $scheme . '://' . $host . (string) ($server['REQUEST_URI'] ?? '/');
    }

    /**
     * @param array<string, mixed> $server
     * @return array<string, string>
     */
    private static function headers(array $server): array
    {
        $headers = [];
        foreach ($server as $key => $value) {
            $key = (string) $key;
            if (str_starts_with($key, 'HTTP_')) {
                $name = substr($key, 5);
            } elseif ($key === 'CONTENT_TYPE' || $key === 'CONTENT_LENGTH') {
                $name = $key;
            } else {
                continue;
            }
            $name = str_replace(' ', '-', ucwords(strtolower(str_replace('_', ' ', $name))));
            $headers[$name] = (string) $value;
        }
        return $headers;
    }

    private static function isForm(string $contentType): bool
    {
        $mime = strtolower(substr($contentType, 0, strcspn($contentType, ';, ')));
        return $mime === 'application/x-www-form-urlencoded' || $mime === 'multipart/form-data';
    }

    /**
     * @param array<array-key, mixed> $files $_FILES
     * @return array<array-key, mixed>
     */
    private function uploadedFileTree(array $files): array
    {
        $tree = [];
        foreach ($files as $field => $info) {
            if (!is_array($info) || !isset($info['error'])) {
                continue;
            }
            $tree[$field] = $this->transpose(
                $info['tmp_name'] ?? '',
                $info['size'] ?? 0,
                $info['error'],
                $info['name'] ?? '',
                $info['type'] ?? ''
            );
        }
        return $tree;
    }

    /**
     * @param mixed $tmpName
     * @param mixed $size
     * @param mixed $error
     * @param mixed $name
     * @param mixed $type
     * @return UploadedFileInterface|array<array-key, mixed>
     */
    private function transpose($tmpName, $size, $error, $name, $type)
    {
        if (!is_array($error)) {
            $error = (int) $error;
            $stream = $error === UPLOAD_ERR_OK
                ? $this->streams->createStreamFromFile((string) $tmpName, 'rb')
                : $this->streams->createStream('');
            return $this->uploadedFiles->createUploadedFile(
                $stream,
                (int) $size,
                $error,
                $name === '' ? null : (string) $name,
                $type === '' ? null : (string) $type
            );
        }
        $tree = [];
        foreach ($error as $key => $childError) {
            $tree[$key] = $this->transpose(
                is_array($tmpName) ? ($tmpName[$key] ?? '') : '',
                is_array($size) ? ($size[$key] ?? 0) : 0,
                $childError,
                is_array($name) ? ($name[$key] ?? '') : '',
                is_array($type) ? ($type[$key] ?? '') : ''
            );
        }
        return $tree;
    }
}

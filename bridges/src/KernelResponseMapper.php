<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\Response;
use Symfony\Component\HttpFoundation\BinaryFileResponse;
use Symfony\Component\HttpFoundation\Response as HttpFoundationResponse;
use Symfony\Component\HttpFoundation\StreamedResponse;

/**
 * Turns a Symfony (or Laravel, which extends it) response into the
 * worker's Response without loss: the status, every header as the
 * application set it, one Set-Cookie per cookie with all its attributes.
 *
 * A plain response's content is sent whole, with Content-Length. Any
 * response that produces its body in sendContent() (StreamedResponse,
 * BinaryFileResponse, a subclass overriding sendContent()) has it called
 * while the worker writes the response: what it writes goes out as it is
 * produced (as PHP flushes its output), never held whole in PHP
 * memory. Headers the application set with header() or setcookie() are
 * merged in by the worker.
 */
final class KernelResponseMapper
{
    /** @var array<class-string, bool> whether a response class produces its body in sendContent() */
    private array $streams = [];

    public function map(HttpFoundationResponse $response, bool $head): Response
    {
        $headers = $response->headers->allPreserveCaseWithoutCookies();
        $cookies = [];
        foreach ($response->headers->getCookies() as $cookie) {
            $cookies[] = (string) $cookie;
        }
        if ($cookies !== []) {
            $headers['Set-Cookie'] = $cookies;
        }
        // HEAD: no body is produced (the declared Content-Length stays)
        return new Response($response->getStatusCode(), $headers, $head ? '' : $this->body($response));
    }

    /** @return string|callable */
    private function body(HttpFoundationResponse $response)
    {
        if (!$this->streams($response)) {
            $content = $response->getContent();
            if (is_string($content)) {
                return $content;
            }
        }
        return static function () use ($response): void {
            $response->sendContent();
        };
    }

    private function streams(HttpFoundationResponse $response): bool
    {
        if ($response instanceof StreamedResponse || $response instanceof BinaryFileResponse) {
            return true;
        }
        $class = get_class($response);
        return $this->streams[$class] ??= (new \ReflectionMethod($response, 'sendContent'))
            ->getDeclaringClass()->getName() !== HttpFoundationResponse::class;
    }
}

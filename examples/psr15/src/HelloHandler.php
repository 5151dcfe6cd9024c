<?php

declare(strict_types=1);

namespace App;

use Psr\Http\Message\ResponseFactoryInterface;
use Psr\Http\Message\ResponseInterface;
use Psr\Http\Message\ServerRequestInterface;
use Psr\Http\Message\StreamFactoryInterface;
use Psr\Http\Server\RequestHandlerInterface;

/** "Hello from PSR-15" on /, a query parameter echoed as JSON on /json?name=x. */
final class HelloHandler implements RequestHandlerInterface
{
    public function __construct(
        private ResponseFactoryInterface $responses,
        private StreamFactoryInterface $streams,
    ) {
    }

    public function handle(ServerRequestInterface $request): ResponseInterface
    {
        switch ($request->getUri()->getPath()) {
            case '/':
                return $this->respond(200, 'text/plain; charset=UTF-8', "Hello from PSR-15\n");

            case '/json':
                $name = $request->getQueryParams()['name'] ?? null;
                $json = json_encode(['name' => $name], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
                return $this->respond(200, 'application/json', $json . "\n");

            default:
                return $this->respond(404, 'text/plain; charset=UTF-8', "Not found\n");
        }
    }

    private function respond(int $status, string $contentType, string $body): ResponseInterface
    {
        return $this->responses->createResponse($status)
            ->withHeader('Content-Type', $contentType)
            ->withBody($this->streams->createStream($body));
    }
}

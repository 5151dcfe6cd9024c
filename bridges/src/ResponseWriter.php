<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Writes one response on its connection: all at once with Content-Length,
 * or, once the application has flushed, head first and the body chunked.
 */
final class ResponseWriter
{
    private ?Response $response = null;

    private bool $withNative = true;

    private bool $close;

    private bool $headSent = false;

    private bool $chunked = false;

    private bool $bodyAllowed = true;

    private bool $done = false;

    private int $status = 0;

    /** Body bytes still owed under a declared Content-Length (streamed body), else null. */
    private ?int $remaining = null;

    private bool $overflow = false;

    public function __construct(
        private Connection $connection,
        private HttpRequest $request,
        private ResponseHead $head,
    ) {
        $this->close = !$request->keepAlive;
    }

    /** The bridge's response: its status and headers apply (merged with native ones). */
    public function useResponse(Response $response): void
    {
        $this->response = $response;
    }

    /** A response of the worker's own (error page): native headers are ignored. */
    public function replaceWith(Response $response): void
    {
        $this->response = $response;
        $this->withNative = false;
    }

    /** Adds "Connection: close" (the worker is about to exit). */
    public function forceClose(): void
    {
        $this->close = true;
    }

    public function closeAfter(): bool
    {
        return $this->close || !$this->connection->isOpen();
    }

    public function headSent(): bool
    {
        return $this->headSent;
    }

    /** Whether the response is complete (or abandoned). */
    public function isDone(): bool
    {
        return $this->done;
    }

    public function status(): int
    {
        return $this->status;
    }

    /** Sends body bytes now (streaming), the head first if needed. */
    public function stream(string $data): void
    {
        if ($this->done) {
            return;
        }
        if (!$this->headSent) {
            $this->sendHead(null, '');
        }
        $this->sendBody($data);
    }

    /** Ends the response with the rest of the body. */
    public function finish(string $rest): void
    {
        if ($this->done) {
            return;
        }
        if (!$this->headSent) {
            $this->sendHead(strlen($rest), $rest);
            $this->done = true;
            return;
        }
        $this->sendBody($rest);
        if ($this->chunked && $this->bodyAllowed) {
            $this->connection->write("0\r\n\r\n");
        }
        $this->done = true;
        if ($this->remaining !== null && $this->bodyAllowed && ($this->remaining > 0 || $this->overflow)) {
            Log::line(sprintf(
                'the response body %s its Content-Length; %s',
                $this->overflow ? 'exceeded' : 'fell short of',
                $this->overflow ? 'the excess was dropped' : 'the connection is closed so the client sees it truncated'
            ));
            if ($this->remaining > 0) {
                $this->abort();
            }
        }
    }

    /** Gives up mid-response: the peer sees a truncated body. */
    public function abort(): void
    {
        $this->done = true;
        $this->close = true;
        $this->connection->close();
    }

    private function sendHead(?int $contentLength, string $body): void
    {
        [$this->status, $head, $this->close, $this->chunked, $this->remaining] = $this->head->build(
            $this->request,
            $this->response,
            $this->withNative,
            $contentLength,
            $contentLength === null || $contentLength > 0,
            $this->close,
        );
        $this->headSent = true;
        $this->bodyAllowed = !StatusText::forbidsBody($this->status) && $this->request->method !== 'HEAD';
        $this->connection->write($this->bodyAllowed ? $head . $body : $head);
    }

    private function sendBody(string $data): void
    {
        if ($data === '' || !$this->bodyAllowed) {
            return;
        }
        if ($this->remaining !== null) {
            if (strlen($data) > $this->remaining) {
                $data = substr($data, 0, $this->remaining);
                $this->overflow = true;
            }
            $this->remaining -= strlen($data);
            if ($data === '') {
                return;
            }
        }
        $this->connection->write($this->chunked ? dechex(strlen($data)) . "\r\n" . $data . "\r\n" : $data);
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * One accepted connection: a read buffer filled without blocking, and
 * blocking writes for the response.
 */
final class Connection
{
    private string $buffer = '';

    private bool $open = true;

    private bool $blocking = true;

    private bool $continueSent = false;

    /**
     * @param resource $stream
     * @param array{0: string, 1: string, 2: string, 3: string} $peer
     */
    public function __construct(private $stream, private RequestParser $parser, private array $peer)
    {
        $this->setBlocking(false);
    }

    /** @return resource */
    public function stream()
    {
        return $this->stream;
    }

    public function isOpen(): bool
    {
        return $this->open;
    }

    /** Reads what is available. False when the peer has closed. */
    public function fill(): bool
    {
        $this->setBlocking(false);
        $got = false;
        while (true) {
            $data = @fread($this->stream, 65536);
            if ($data === false || $data === '') {
                break;
            }
            $this->buffer .= $data;
            $got = true;
        }
        if (!$got && feof($this->stream)) {
            $this->close();
            return false;
        }
        return true;
    }

    /**
     * The next complete request in the buffer, if any.
     *
     * @throws HttpError
     */
    public function nextRequest(): ?HttpRequest
    {
        $this->buffer = ltrim($this->buffer, "\r\n");
        if ($this->buffer === '') {
            return null;
        }
        [$request, $used, $expectContinue] = $this->parser->parse($this->buffer, $this->peer);
        if ($request === null) {
            if ($expectContinue && !$this->continueSent) {
                $this->continueSent = true;
                $this->write("HTTP/1.1 100 Continue\r\n\r\n");
            }
            return null;
        }
        $this->buffer = (string) substr($this->buffer, $used);
        $this->continueSent = false;
        return $request;
    }

    /** Writes everything, blocking. False (and closed) if the peer is gone. */
    public function write(string $data): bool
    {
        if (!$this->open) {
            return false;
        }
        $this->setBlocking(true);
        $length = strlen($data);
        $offset = 0;
        while ($offset < $length) {
            $written = @fwrite($this->stream, $offset === 0 ? $data : substr($data, $offset));
            if ($written === false || $written === 0) {
                $this->close();
                return false;
            }
            $offset += $written;
        }
        return true;
    }

    public function close(): void
    {
        if ($this->open) {
            $this->open = false;
            @stream_socket_shutdown($this->stream, STREAM_SHUT_RDWR);
            @fclose($this->stream);
        }
    }

    private function setBlocking(bool $blocking): void
    {
        if ($this->open && $this->blocking !== $blocking) {
            stream_set_blocking($this->stream, $blocking);
            $this->blocking = $blocking;
        }
    }
}

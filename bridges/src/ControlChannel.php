<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Newline-delimited JSON with the master over the inherited socket.
 *
 * The socket is fd 3 (php://fd/3 under the CLI); under php-cgi CgiReexec
 * has moved it to fd 0. EOF means the master is gone: the worker exits.
 */
final class ControlChannel
{
    /** @param resource $stream */
    private function __construct(private $stream)
    {
    }

    public static function open(): self
    {
        if (PHP_SAPI === 'cli') {
            $stream = @fopen('php://fd/3', 'r+b');
        } elseif (CgiReexec::stdinIsSocket()) {
            $stream = @fopen('php://stdin', 'r+b');
        } else {
            $stream = false;
        }
        if ($stream === false) {
            Log::line('no control channel: fd 3 must be the socket from the master');
            exit(1);
        }
        return new self($stream);
    }

    /** @return resource */
    public function stream()
    {
        return $this->stream;
    }

    /** Blocks for the next line; null at EOF. */
    public function readLine(): ?string
    {
        $line = fgets($this->stream);
        return $line === false ? null : rtrim($line, "\r\n");
    }

    /**
     * Reads what the master sent after the select loop saw the channel
     * readable. Returns false at EOF (the master is gone).
     */
    public function poll(): bool
    {
        $data = @fread($this->stream, 8192);
        if ($data === false || ($data === '' && feof($this->stream))) {
            return false;
        }
        return true;
    }

    /** @param array<string, mixed> $message */
    public function send(array $message): bool
    {
        $flags = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
            | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR;
        $line = json_encode($message, $flags);
        return @fwrite($this->stream, $line . "\n") !== false;
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * The worker's HTTP/1.1 listener and its select loop.
 *
 * One request is served at a time, but every open connection and the
 * control channel are watched together, so an idle keep-alive connection
 * never blocks another one and the master's exit is seen at once.
 */
final class Server
{
    /** @var array<int, Connection> */
    private array $connections = [];

    private bool $stopping = false;

    /** @param resource $socket */
    private function __construct(
        private $socket,
        private ?string $unixPath,
        private RequestParser $parser,
    ) {
    }

    public static function listen(string $address, RequestParser $parser): self
    {
        $unixPath = null;
        if (str_starts_with($address, 'unix://')) {
            $unixPath = substr($address, 7);
        } elseif (!str_starts_with($address, 'tcp://')) {
            throw new BootstrapException("cannot listen on '$address': expected unix:///path or tcp://host:port");
        }
        $context = stream_context_create(['socket' => ['backlog' => 511]]);
        $socket = @stream_socket_server(
            $address,
            $errno,
            $error,
            STREAM_SERVER_BIND | STREAM_SERVER_LISTEN,
            $context
        );
        if ($socket === false) {
            throw new BootstrapException("cannot listen on $address: $error");
        }
        stream_set_blocking($socket, false);
        return new self($socket, $unixPath, $parser);
    }

    /**
     * Serves until the control channel reaches EOF or stop() is called.
     *
     * @param callable(Connection, HttpRequest): bool $serve returns whether
     *        the connection stays open
     */
    public function run(ControlChannel $control, callable $serve): void
    {
        while (!$this->stopping) {
            $read = [$this->socket, $control->stream()];
            foreach ($this->connections as $connection) {
                $read[] = $connection->stream();
            }
            $write = null;
            $except = null;
            if (@stream_select($read, $write, $except, null) === false) {
                continue; // interrupted by a signal
            }
            foreach ($read as $stream) {
                if ($stream === $control->stream()) {
                    if (!$control->poll()) {
                        return;
                    }
                } elseif ($stream === $this->socket) {
                    $this->accept();
                } else {
                    $connection = $this->connections[(int) $stream] ?? null;
                    if ($connection !== null && $connection->isOpen() && $connection->fill()) {
                        $this->drain($connection, $serve);
                    }
                }
                if ($this->stopping) {
                    return;
                }
            }
            $this->forgetClosed();
        }
    }

    /** Asks run() to return after the current request. */
    public function stop(): void
    {
        $this->stopping = true;
    }

    /** Closes everything; removes the Unix socket file. */
    public function close(): void
    {
        foreach ($this->connections as $connection) {
            $connection->close();
        }
        $this->connections = [];
        if (is_resource($this->socket)) {
            @fclose($this->socket);
        }
        if ($this->unixPath !== null) {
            @unlink($this->unixPath);
            $this->unixPath = null;
        }
    }

    private function accept(): void
    {
        while (($stream = @stream_socket_accept($this->socket, 0)) !== false) {
            $peer = [
                ...self::splitAddress((string) @stream_socket_get_name($stream, true), '127.0.0.1', '0'),
                ...self::splitAddress((string) @stream_socket_get_name($stream, false), '127.0.0.1', '80'),
            ];
            $connection = new Connection($stream, $this->parser, $peer);
            $this->connections[(int) $stream] = $connection;
        }
    }

    /** @param callable(Connection, HttpRequest): bool $serve */
    private function drain(Connection $connection, callable $serve): void
    {
        while ($connection->isOpen() && !$this->stopping) {
            try {
                $request = $connection->nextRequest();
            } catch (HttpError $e) {
                $this->refuse($connection, $e);
                return;
            }
            if ($request === null) {
                return;
            }
            if (!$serve($connection, $request)) {
                $connection->close();
            }
        }
    }

    private function refuse(Connection $connection, HttpError $error): void
    {
        Log::line("refused a request: {$error->status} {$error->getMessage()}");
        $body = StatusText::of($error->status) . ': ' . $error->getMessage() . "\n";
        $connection->write(
            "HTTP/1.1 {$error->status} " . StatusText::of($error->status) . "\r\n"
            . "Content-Type: text/plain; charset=UTF-8\r\n"
            . 'Content-Length: ' . strlen($body) . "\r\n"
            . "Connection: close\r\n\r\n"
            . $body
        );
        $connection->close();
    }

    private function forgetClosed(): void
    {
        foreach ($this->connections as $id => $connection) {
            if (!$connection->isOpen()) {
                unset($this->connections[$id]);
            }
        }
    }

    /** @return array{0: string, 1: string} */
    private static function splitAddress(string $name, string $defaultHost, string $defaultPort): array
    {
        $pos = strrpos($name, ':');
        if ($name === '' || $pos === false || str_starts_with($name, '/')) {
            return [$defaultHost, $defaultPort];
        }
        $host = trim(substr($name, 0, $pos), '[]');
        $port = substr($name, $pos + 1);
        return [$host === '' ? $defaultHost : $host, $port === '' ? $defaultPort : $port];
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

use Ppm\Bridge\BridgeFactory;
use Ppm\Bridge\BridgeInterface;

/**
 * The worker process: reads its config from the master, bootstraps the
 * application once, then serves requests one at a time until the master
 * goes away.
 *
 * Control channel messages (one JSON object per line):
 * - master → worker, first line: {"type":"config","listen":...,"trust_master":...,
 *   "bridge":...,"bootstrap":...,"app_dir":...,"app_env":...,"debug":...,"slot":...}
 * - worker → master:
 *   {"type":"ready","pid":N,"sapi":"cgi-fcgi"}
 *   {"type":"bootstrap_error","message":"PHP Parse error:  ..."} (then exit 1)
 *   {"type":"request_done","memory":N,"peak_memory":N}
 *   {"type":"exiting","reason":"..."} (then the process ends)
 *   {"type":"included_files","files":[...]} (debug mode: files newly loaded)
 */
final class Worker
{
    private const STARTING = 'starting';
    private const BOOTSTRAP = 'bootstrap';
    private const IDLE = 'idle';
    private const REQUEST = 'request';
    private const TERMINATE = 'terminate';
    private const STOPPING = 'stopping';

    private static ?self $instance = null;

    private string $phase = self::STARTING;

    private ?ControlChannel $control = null;

    private ?Config $config = null;

    private ?BridgeInterface $bridge = null;

    private ?Server $server = null;

    private ?RequestGlobals $globals = null;

    private ?ResponseWriter $writer = null;

    private OutputCapture $capture;

    private SessionGuard $session;

    private ResponseHead $head;

    /** @var array<string, true> */
    private array $reportedFiles = [];

    private function __construct()
    {
        $this->capture = new OutputCapture();
        $this->session = new SessionGuard();
    }

    public static function main(): int
    {
        CgiReexec::ensure();
        self::$instance = new self();
        return self::$instance->run();
    }

    /**
     * fastcgi_finish_request() for applications: sends the response now.
     *
     * @internal see polyfills.php
     */
    public static function finishRequest(): bool
    {
        $worker = self::$instance;
        if ($worker === null || $worker->phase !== self::REQUEST || $worker->writer === null) {
            return false;
        }
        $worker->capture->finish();
        return true;
    }

    private function run(): int
    {
        register_shutdown_function([$this, 'onShutdown']);
        $this->capture->install();
        $this->control = ControlChannel::open();
        $this->phase = self::BOOTSTRAP;
        try {
            $line = $this->control->readLine();
            if ($line === null) {
                $this->phase = self::STOPPING;
                return 0; // the master left before sending the config
            }
            $this->config = Config::fromJson($line);
            if (PHP_SAPI === 'cli') {
                Log::line(
                    'running under the PHP CLI: native header(), setcookie() and session cookies cannot reach '
                    . 'clients; only http_response_code() and bridge Response objects set the status and headers '
                    . '(install php-cgi for full PHP-FPM compatibility)'
                );
            }
            $this->bootstrap($this->config);
            $this->server = Server::listen(
                $this->config->listen,
                new RequestParser($this->config->trustMaster, Ini::bytes('post_max_size'))
            );
        } catch (\Throwable $e) {
            $this->failBootstrap(
                $e instanceof BootstrapException ? $e->getMessage() : ErrorFormatter::throwable($e),
                true
            );
        }
        $this->head = new ResponseHead($this->session, !$this->config->trustMaster);
        $this->capture->idle();
        $this->phase = self::IDLE;
        SlowLog::install($this->control);
        $this->control->send([
            'type' => 'ready',
            'pid' => getmypid(),
            'sapi' => PHP_SAPI,
            'memory_limit' => (string) ini_get('memory_limit'),
        ]);
        $this->reportIncludedFiles();

        $this->server->run(
            $this->control,
            fn (Connection $connection, HttpRequest $request): bool => $this->serve($connection, $request)
        );
        $this->phase = self::STOPPING;
        $this->server->close();
        return 0;
    }

    private function bootstrap(Config $config): void
    {
        if (!is_dir($config->appDir) || !@chdir($config->appDir)) {
            throw new BootstrapException("app_dir {$config->appDir} is not a directory we can enter");
        }
        $_SERVER = RequestGlobals::environmentSnapshot();
        $autoload = $config->appDir . '/vendor/autoload.php';
        if (is_file($autoload)) {
            (static function (string $__file): void {
                require_once $__file;
            })($autoload);
        }
        $this->bridge = BridgeFactory::create($config->bridge);
        $this->bridge->bootstrap($config->bootstrap, $config->appDir, $config->appEnv, $config->debug);

        $scriptName = $this->bridge->scriptName();
        if (method_exists($this->bridge, 'documentRoot')) {
            $documentRoot = (string) $this->bridge->documentRoot();
        } else {
            $documentRoot = is_dir($config->appDir . '/public') ? $config->appDir . '/public' : $config->appDir;
        }
        $this->globals = new RequestGlobals(rtrim($documentRoot, '/'), $scriptName, $_SERVER);
        $this->globals->reset();
        if (PHP_SAPI !== 'cli') {
            header_remove();
        }
        http_response_code(200);
    }

    private function serve(Connection $connection, HttpRequest $request): bool
    {
        $this->phase = self::REQUEST;
        error_clear_last();
        $writer = new ResponseWriter($connection, $request, $this->head);
        $this->writer = $writer;
        $this->capture->begin($writer);
        try {
            RequestContext::begin($request->body, $this->globals->populate($request));
            $this->session->beforeRequest();
            $response = $this->bridge->handle();
            if ($response !== null) {
                $writer->useResponse($response);
                $response->emitBody();
            }
            $this->capture->finish();
        } catch (\Throwable $e) {
            $this->respondWithError($writer, $e);
        }
        $this->session->afterResponse();

        $this->phase = self::TERMINATE;
        try {
            $this->bridge->terminate();
        } catch (\Throwable $e) {
            Log::raw(ErrorFormatter::throwable($e));
        }
        $this->resetRequest();
        $this->phase = self::IDLE;

        $this->control->send([
            'type' => 'request_done',
            'memory' => memory_get_usage(),
            'peak_memory' => memory_get_peak_usage(),
        ]);
        $this->reportIncludedFiles();
        if ($this->capture->mustExit()) {
            $this->control->send([
                'type' => 'exiting',
                'reason' => 'the application removed the output buffer and output reached stdout',
            ]);
            $this->server->stop();
            return false;
        }
        return !$writer->closeAfter();
    }

    private function respondWithError(ResponseWriter $writer, \Throwable $e): void
    {
        $message = ErrorFormatter::throwable($e);
        Log::raw($message);
        $this->capture->discard();
        if ($writer->isDone()) {
            return; // after fastcgi_finish_request(): the client has its answer
        }
        if ($writer->headSent()) {
            $writer->abort();
            return;
        }
        $page = ErrorFormatter::page(500, $message, $this->config->debug);
        $writer->replaceWith($page);
        $writer->finish((string) $page->body());
    }

    private function resetRequest(): void
    {
        $this->capture->idle();
        $this->globals->reset();
        RequestContext::end();
        if (!headers_sent()) {
            if (PHP_SAPI !== 'cli') {
                header_remove();
            }
            http_response_code(200);
        }
        $this->writer = null;
    }

    /** @internal registered first, so it runs before the application's shutdown functions */
    public function onShutdown(): void
    {
        switch ($this->phase) {
            case self::BOOTSTRAP:
                $error = error_get_last();
                if ($error !== null && ($error['type'] & ErrorFormatter::FATAL) !== 0) {
                    $this->failBootstrap(ErrorFormatter::error($error), !ini_get('log_errors'));
                }
                $this->failBootstrap('exit() called during bootstrap', true);
                // no break: failBootstrap() exits
            case self::REQUEST:
            case self::TERMINATE:
                // let the application's own shutdown functions run first (they may render an error page)
                register_shutdown_function([$this, 'finishInterruptedRequest']);
                return;
            case self::IDLE:
                $this->capture->off();
                $this->server?->close();
                return;
            default:
                $this->capture->off();
        }
    }

    /** @internal exit() or a fatal error during a request: answer, report, let the process end */
    public function finishInterruptedRequest(): void
    {
        @ini_set('memory_limit', '-1');
        $error = error_get_last();
        $fatal = $error !== null && ($error['type'] & ErrorFormatter::FATAL) !== 0;
        $writer = $this->writer;
        if ($this->phase === self::REQUEST && $writer !== null) {
            $writer->forceClose();
            if (!$fatal) {
                $this->capture->finish();
            } else {
                $this->capture->discard();
                if ($writer->headSent()) {
                    $writer->abort();
                } else {
                    $page = ErrorFormatter::page(500, ErrorFormatter::error($error), $this->config?->debug ?? false);
                    $writer->replaceWith($page);
                    $writer->finish((string) $page->body());
                }
            }
            $this->session->afterResponse();
        }
        $this->capture->off();
        RequestContext::end();
        $this->phase = self::STOPPING;
        $this->control?->send([
            'type' => 'exiting',
            'reason' => $fatal
                ? 'fatal error during a request: ' . $error['message']
                : 'exit() called during a request',
        ]);
        $this->server?->close();
    }

    private function failBootstrap(string $message, bool $print): never
    {
        $this->phase = self::STOPPING;
        $this->capture->off();
        // The master logs what it receives once for all slots; print it
        // here only when it cannot reach the master.
        $sent = $this->control?->send(['type' => 'bootstrap_error', 'message' => $message]) ?? false;
        if ($print && !$sent) {
            Log::line('bootstrap failed: ' . $message);
        }
        $this->server?->close();
        exit(1);
    }

    private function reportIncludedFiles(): void
    {
        if (!$this->config->debug) {
            return;
        }
        $new = [];
        $runtime = dirname(__DIR__) . '/';
        foreach (get_included_files() as $file) {
            if (!isset($this->reportedFiles[$file]) && !str_starts_with($file, $runtime)) {
                $this->reportedFiles[$file] = true;
                $new[] = $file;
            }
        }
        if ($new !== []) {
            $this->control->send(['type' => 'included_files', 'files' => $new]);
        }
    }
}

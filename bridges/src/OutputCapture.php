<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * The worker's own output buffer, installed once at the bottom of the
 * stack. Its handler always returns '', so nothing ever reaches php-cgi's
 * real output, headers are never "sent", and headers_list(),
 * header_remove() and http_response_code() keep working.
 *
 * During a request, output goes to the response: buffered while it is
 * small, streamed chunked once the application flushes (ob_flush(), or
 * flush() after ob_flush()) or once it passes CHUNK_SIZE. Outside requests
 * it goes to the log (bootstrap) or nowhere (terminate work).
 *
 * The buffer is removable like PHP's own output_buffering one, so loops
 * such as `while (ob_get_level()) ob_end_clean();` end. If the application
 * removes it, it is put back after the request; if output escaped to the
 * real stdout meanwhile, php-cgi considers headers sent for good and the
 * worker must be replaced (mustExit()).
 */
final class OutputCapture
{
    public const CHUNK_SIZE = 65536;

    private const LOG = 0;
    private const REQUEST = 1;
    private const DISCARD = 2;
    private const OFF = 3;

    private int $mode = self::LOG;

    private int $level = 0;

    private bool $lost = false;

    private bool $mustExit = false;

    private string $pending = '';

    private ?ResponseWriter $writer = null;

    public function install(): void
    {
        ob_start([$this, 'handle'], self::CHUNK_SIZE);
        $this->level = ob_get_level();
        $this->lost = false;
    }

    /** @internal the ob_start() callback */
    public function handle(string $data, int $phase): string
    {
        try {
            if (($phase & PHP_OUTPUT_HANDLER_FINAL) !== 0 && $this->mode !== self::OFF) {
                $this->lost = true;
            }
            $flush = ($phase & PHP_OUTPUT_HANDLER_FLUSH) !== 0;
            if (($phase & PHP_OUTPUT_HANDLER_CLEAN) !== 0 || ($data === '' && !$flush)) {
                return ''; // ob_clean() and friends: the content is thrown away
            }
            if ($this->mode === self::LOG) {
                Log::raw('output outside a request: ' . $data);
            } elseif ($this->mode === self::REQUEST && $this->writer !== null) {
                $this->pending .= $data;
                if ($flush
                    || strlen($this->pending) >= self::CHUNK_SIZE
                    || $this->writer->headSent()
                ) {
                    $chunk = $this->pending;
                    $this->pending = '';
                    $this->writer->stream($chunk);
                }
            }
        } catch (\Throwable $e) {
            Log::line('output handler failed: ' . $e->getMessage());
        }
        return '';
    }

    /** Output from now on is the body of this response. */
    public function begin(ResponseWriter $writer): void
    {
        $this->settle();
        $this->writer = $writer;
        $this->pending = '';
        $this->mode = self::REQUEST;
    }

    /**
     * Ends the response with everything still buffered, nested application
     * buffers included (flushed into ours, as PHP does at the end of a
     * request).
     */
    public function finish(): void
    {
        $rest = $this->collect(true);
        $writer = $this->writer;
        $this->release();
        if ($this->mustExit) {
            $writer?->forceClose();
        }
        $writer?->finish($rest);
    }

    /** Drops everything buffered (the response is replaced by an error). */
    public function discard(): void
    {
        $this->collect(false);
        $this->release();
    }

    /** Back to logging stray output, between requests (terminate output is dropped). */
    public function idle(): void
    {
        $this->settle();
        $this->mode = self::LOG;
    }

    /** The process is ending: output goes nowhere. */
    public function off(): void
    {
        $this->mode = self::OFF;
        $this->writer = null;
    }

    /** Output escaped to the real stdout: php-cgi cannot set headers any more. */
    public function mustExit(): bool
    {
        return $this->mustExit;
    }

    /** Empties the buffers outside a request: logged in LOG mode, dropped otherwise. */
    private function settle(): void
    {
        if ($this->mode === self::REQUEST || $this->mode === self::OFF) {
            return;
        }
        $log = $this->mode === self::LOG;
        $rest = $this->collect($log);
        $this->pending = '';
        if ($log && $rest !== '') {
            Log::raw('output outside a request: ' . $rest);
        }
        $this->reinstallIfLost();
    }

    private function release(): void
    {
        $this->pending = '';
        $this->writer = null;
        $this->mode = self::DISCARD;
        $this->reinstallIfLost();
    }

    /** Puts our buffer back if the application removed it. */
    private function reinstallIfLost(): void
    {
        if (!$this->lost) {
            return;
        }
        if (PHP_SAPI !== 'cli' && headers_sent()) {
            $this->mustExit = true;
        }
        $this->install();
    }

    /**
     * Empties the buffers above ours and ours; returns their content (in
     * output order) if $keep. Application buffers are flushed down into
     * ours, so their handlers run as at the end of a PHP request.
     */
    private function collect(bool $keep): string
    {
        if ($this->lost) {
            // ours is gone: take the raw content of whatever is left, top first
            $content = '';
            while (ob_get_level() > 0) {
                $status = ob_get_status();
                if (((int) ($status['flags'] ?? 0) & PHP_OUTPUT_HANDLER_REMOVABLE) === 0) {
                    break;
                }
                $content = (string) @ob_get_clean() . $content;
            }
            return $keep ? $this->pending . $content : '';
        }
        $stuck = '';
        while (ob_get_level() > $this->level) {
            $flags = (int) (ob_get_status()['flags'] ?? 0);
            if (($flags & PHP_OUTPUT_HANDLER_REMOVABLE) !== 0) {
                $keep ? @ob_end_flush() : @ob_end_clean();
                continue;
            }
            if (($flags & PHP_OUTPUT_HANDLER_CLEANABLE) !== 0) {
                $stuck = (string) ob_get_contents() . $stuck;
                @ob_clean();
            }
            Log::line('an application output buffer cannot be removed; the buffers under it were left as they are');
            break;
        }
        $ours = '';
        if (!$this->lost && ob_get_level() === $this->level) {
            $ours = (string) ob_get_contents();
            @ob_clean();
        }
        return $keep ? $this->pending . $ours . $stuck : '';
    }
}

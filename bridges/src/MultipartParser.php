<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * multipart/form-data the way PHP's rfc1867 handler reads it: fields into
 * $_POST, files into $_FILES (transposed structure for nested names, keys
 * name, full_path, type, tmp_name, error, size), temporary files named
 * "php*" in upload_tmp_dir or the system temporary directory.
 */
final class MultipartParser
{
    /** @var array<array-key, mixed> */
    private array $post = [];

    /** @var array<array-key, mixed> */
    private array $files = [];

    /** @var list<string> */
    private array $tempFiles = [];

    private string $body = '';

    private int $pos = 0;

    /**
     * @return array{0: array<array-key, mixed>, 1: array<array-key, mixed>, 2: list<string>}
     *         $_POST, $_FILES and the temporary files created
     */
    public static function parse(string $contentType, string $body): array
    {
        $parser = new self();
        $parser->run($contentType, $body);
        return [$parser->post, $parser->files, $parser->tempFiles];
    }

    private function run(string $contentType, string $body): void
    {
        $boundary = self::boundary($contentType);
        if ($boundary === null) {
            return;
        }
        $this->body = $body;
        $this->pos = 0;
        $delimiter = '--' . $boundary;

        $maxVars = (int) ini_get('max_input_vars');
        $uploadsLeft = (int) ini_get('max_file_uploads');
        $fileUploads = (bool) ini_get('file_uploads');
        $maxFileSize = Ini::bytes('upload_max_filesize');
        $formMaxFileSize = 0;
        $fieldCount = 0;
        $anonymous = 0;
        $skip = false;

        while ($this->findBoundary($delimiter)) {
            $headers = $this->readHeaders();
            [$content, $complete] = $this->readContent($delimiter);

            $disposition = self::headerValue($headers, 'Content-Disposition');
            if ($disposition === null) {
                continue;
            }
            [$name, $filename] = self::dispositionParams($disposition);

            if ($filename === null && $name !== null) {
                if ($maxVars > 0 && ++$fieldCount > $maxVars) {
                    if ($fieldCount === $maxVars + 1) {
                        Log::startupWarning(
                            "Input variables exceeded $maxVars. To increase the limit change max_input_vars in php.ini."
                        );
                    }
                } else {
                    VariableRegistrar::register($this->post, $name, $content);
                }
                if (strcasecmp($name, 'MAX_FILE_SIZE') === 0) {
                    $formMaxFileSize = (int) $content;
                }
                continue;
            }

            // like PHP, once a file part is skipped, every later file part is too
            if (!$skip && !$fileUploads) {
                $skip = true;
            } elseif (!$skip && $uploadsLeft <= 0) {
                $skip = true;
                Log::startupWarning('Maximum number of allowable file uploads has been exceeded');
            }
            if ($name === null && $filename === null) {
                Log::startupWarning('File Upload Mime headers garbled');
                return;
            }
            $name ??= (string) $anonymous++;
            if (!$skip && !self::bracketsBalanced($name)) {
                $skip = true;
            }
            if ($skip) {
                continue;
            }
            $filename ??= '';

            $error = UPLOAD_ERR_OK;
            $tmpName = '';
            $size = 0;
            if ($filename === '') {
                $error = UPLOAD_ERR_NO_FILE;
            } else {
                $uploadsLeft--;
                $size = strlen($content);
                if ($maxFileSize > 0 && $size > $maxFileSize) {
                    $error = UPLOAD_ERR_INI_SIZE;
                } elseif ($formMaxFileSize > 0 && $size > $formMaxFileSize) {
                    $error = UPLOAD_ERR_FORM_SIZE;
                } elseif (!$complete) {
                    $error = UPLOAD_ERR_PARTIAL;
                }
                if ($error === UPLOAD_ERR_OK || $error === UPLOAD_ERR_PARTIAL) {
                    $tmpName = $this->writeTempFile($content);
                    if ($tmpName === null) {
                        Log::startupWarning('File upload error - unable to create a temporary file');
                        $error = UPLOAD_ERR_CANT_WRITE;
                        $tmpName = '';
                    } elseif ($error === UPLOAD_ERR_PARTIAL) {
                        @unlink($tmpName);
                        $tmpName = '';
                    }
                }
                if ($error !== UPLOAD_ERR_OK) {
                    $size = 0;
                }
            }

            $type = '';
            if ($error === UPLOAD_ERR_OK || $error === UPLOAD_ERR_PARTIAL) {
                $type = self::headerValue($headers, 'Content-Type') ?? '';
                $semicolon = strpos($type, ';');
                if ($semicolon !== false) {
                    $type = substr($type, 0, $semicolon);
                }
            }
            $this->registerFile($name, [
                'name' => self::basename($filename),
                'full_path' => $filename,
                'type' => $type,
                'tmp_name' => $tmpName,
                'error' => $error,
                'size' => $size,
            ]);
        }
    }

    /** @param array<string, string|int> $entry */
    private function registerFile(string $name, array $entry): void
    {
        $open = strpos($name, '[');
        $isArray = $open !== false && str_ends_with($name, ']');
        foreach ($entry as $key => $value) {
            if ($isArray) {
                $var = substr($name, 0, $open) . "[$key][" . substr($name, $open + 1, -1) . ']';
            } else {
                $var = $name . "[$key]";
            }
            VariableRegistrar::register($this->files, $var, $value);
        }
    }

    private function findBoundary(string $delimiter): bool
    {
        while (($line = $this->nextLine()) !== null) {
            if ($line === $delimiter) {
                return true;
            }
        }
        return false;
    }

    /** @return list<array{0: string, 1: string}> */
    private function readHeaders(): array
    {
        $headers = [];
        while (($line = $this->nextLine()) !== null && $line !== '') {
            $colon = ctype_space($line[0]) ? false : strpos($line, ':');
            if ($colon !== false) {
                $headers[] = [substr($line, 0, $colon), ltrim(substr($line, $colon + 1), " \t\n\r\v\f")];
            } elseif ($headers !== []) {
                $headers[array_key_last($headers)][1] .= $line;
            }
        }
        return $headers;
    }

    /** @return array{0: string, 1: bool} the content and whether a boundary ended it */
    private function readContent(string $delimiter): array
    {
        $next = strpos($this->body, "\n" . $delimiter, $this->pos);
        if ($next === false) {
            $content = (string) substr($this->body, $this->pos);
            $this->pos = strlen($this->body);
            return [$content, false];
        }
        $content = (string) substr($this->body, $this->pos, $next - $this->pos);
        if (str_ends_with($content, "\r")) {
            $content = substr($content, 0, -1);
        }
        $this->pos = $next + 1;
        return [$content, true];
    }

    private function nextLine(): ?string
    {
        if ($this->pos >= strlen($this->body)) {
            return null;
        }
        $end = strpos($this->body, "\n", $this->pos);
        if ($end === false) {
            $line = substr($this->body, $this->pos);
            $this->pos = strlen($this->body);
            return $line;
        }
        $line = substr($this->body, $this->pos, $end - $this->pos);
        $this->pos = $end + 1;
        return str_ends_with($line, "\r") ? substr($line, 0, -1) : $line;
    }

    private function writeTempFile(string $content): ?string
    {
        $dir = (string) ini_get('upload_tmp_dir');
        if ($dir === '' || !is_dir($dir) || !is_writable($dir)) {
            $dir = sys_get_temp_dir();
        }
        $path = @tempnam($dir, 'php');
        if ($path === false) {
            return null;
        }
        if (@file_put_contents($path, $content) !== strlen($content)) {
            @unlink($path);
            return null;
        }
        $this->tempFiles[] = $path;
        return $path;
    }

    private static function boundary(string $contentType): ?string
    {
        $pos = strpos($contentType, 'boundary');
        if ($pos === false) {
            $pos = stripos($contentType, 'boundary');
        }
        $eq = $pos === false ? false : strpos($contentType, '=', $pos);
        if ($eq === false) {
            Log::startupWarning('Missing boundary in multipart/form-data POST data');
            return null;
        }
        $boundary = substr($contentType, $eq + 1);
        if (str_starts_with($boundary, '"')) {
            $end = strpos($boundary, '"', 1);
            if ($end === false) {
                Log::startupWarning('Invalid boundary in multipart/form-data POST data');
                return null;
            }
            return substr($boundary, 1, $end - 1);
        }
        $end = strcspn($boundary, ',;');
        return substr($boundary, 0, $end);
    }

    /** @param list<array{0: string, 1: string}> $headers */
    private static function headerValue(array $headers, string $name): ?string
    {
        foreach ($headers as [$key, $value]) {
            if (strcasecmp($key, $name) === 0) {
                return $value;
            }
        }
        return null;
    }

    /** @return array{0: ?string, 1: ?string} name and filename parameters */
    private static function dispositionParams(string $disposition): array
    {
        $name = null;
        $filename = null;
        $rest = ltrim($disposition, " \t\n\r\v\f");
        while ($rest !== '') {
            $pair = self::getWord($rest, ';');
            $rest = ltrim($rest, " \t\n\r\v\f");
            if (!str_contains($pair, '=')) {
                continue;
            }
            $key = self::getWord($pair, '=');
            if (strcasecmp($key, 'name') === 0) {
                $name = self::getWordConf($pair);
            } elseif (strcasecmp($key, 'filename') === 0) {
                $filename = self::getWordConf($pair);
            }
        }
        return [$name, $filename];
    }

    /** php_ap_getword(): up to $stop outside quotes; $line keeps the rest. */
    private static function getWord(string &$line, string $stop): string
    {
        $length = strlen($line);
        $pos = 0;
        while ($pos < $length && $line[$pos] !== $stop) {
            $quote = $line[$pos];
            if ($quote === '"' || $quote === '\'') {
                $pos++;
                while ($pos < $length && $line[$pos] !== $quote) {
                    $pos += ($line[$pos] === '\\' && ($line[$pos + 1] ?? '') === $quote) ? 2 : 1;
                }
                if ($pos < $length) {
                    $pos++;
                }
            } else {
                $pos++;
            }
        }
        if ($pos >= $length) {
            $word = $line;
            $line = '';
            return $word;
        }
        $word = substr($line, 0, $pos);
        while ($pos < $length && $line[$pos] === $stop) {
            $pos++;
        }
        $line = substr($line, $pos);
        return $word;
    }

    /** php_ap_getword_conf(): a parameter value, quoted or a bare token. */
    private static function getWordConf(string $value): string
    {
        $value = ltrim($value, " \t\n\r\v\f");
        if ($value === '') {
            return '';
        }
        $quote = $value[0];
        if ($quote === '"' || $quote === '\'') {
            $value = substr($value, 1);
        } else {
            $quote = '';
            $value = substr($value, 0, strcspn($value, " \t\n\r\v\f"));
        }
        $result = '';
        $length = strlen($value);
        for ($i = 0; $i < $length && ($quote === '' || $value[$i] !== $quote); $i++) {
            $next = $value[$i + 1] ?? '';
            if ($value[$i] === '\\' && ($next === '\\' || ($quote !== '' && $next === $quote))) {
                $result .= $next;
                $i++;
            } else {
                $result .= $value[$i];
            }
        }
        return $result;
    }

    private static function basename(string $path): string
    {
        $slash = strrpos($path, '/');
        $backslash = strrpos($path, '\\');
        $cut = max($slash === false ? -1 : $slash, $backslash === false ? -1 : $backslash);
        return $cut < 0 ? $path : substr($path, $cut + 1);
    }

    /** "New rule: never repair potential malicious user input" (brackets must nest and close). */
    private static function bracketsBalanced(string $name): bool
    {
        $depth = 0;
        $length = strlen($name);
        for ($i = 0; $i < $length; $i++) {
            if ($name[$i] === '[') {
                $depth++;
            } elseif ($name[$i] === ']') {
                $depth--;
                if ($i + 1 < $length && $name[$i + 1] !== '[') {
                    return false;
                }
            }
            if ($depth < 0) {
                return false;
            }
        }
        return $depth === 0;
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Fills and resets $_SERVER, $_GET, $_POST, $_COOKIE, $_FILES and
 * $_REQUEST per request, the way PHP-FPM would. $_ENV is left alone.
 */
final class RequestGlobals
{
    private const REQUEST_KEYS = [
        'QUERY_STRING', 'REQUEST_METHOD', 'CONTENT_TYPE', 'CONTENT_LENGTH', 'SCRIPT_NAME',
        'SCRIPT_FILENAME', 'REQUEST_URI', 'DOCUMENT_URI', 'DOCUMENT_ROOT', 'SERVER_PROTOCOL',
        'REQUEST_SCHEME', 'HTTPS', 'GATEWAY_INTERFACE', 'SERVER_SOFTWARE', 'REMOTE_ADDR', 'REMOTE_PORT',
        'REMOTE_HOST', 'REMOTE_USER', 'SERVER_ADDR', 'SERVER_PORT', 'SERVER_NAME', 'REDIRECT_STATUS',
        'PATH_INFO', 'PATH_TRANSLATED', 'PHP_SELF', 'PHP_AUTH_USER', 'PHP_AUTH_PW', 'PHP_AUTH_DIGEST',
        'AUTH_TYPE', 'REQUEST_TIME', 'REQUEST_TIME_FLOAT', 'argv', 'argc', 'FCGI_ROLE',
    ];

    /** @var array<string, mixed> */
    private array $environment;

    /**
     * @param array<string, mixed> $base $_SERVER as the bootstrap left it:
     *        the environment plus what the application added (e.g. Dotenv)
     */
    public function __construct(private string $documentRoot, private string $scriptName, array $base)
    {
        $this->environment = self::withoutRequestKeys($base);
    }

    /** @return array<string, mixed> the process environment minus anything request-ish */
    public static function environmentSnapshot(): array
    {
        return self::withoutRequestKeys(getenv());
    }

    /**
     * @param array<array-key, mixed> $variables
     * @return array<string, mixed> the variables minus anything request-ish
     */
    public static function withoutRequestKeys(array $variables): array
    {
        $environment = [];
        foreach ($variables as $key => $value) {
            $key = (string) $key;
            if (in_array($key, self::REQUEST_KEYS, true)
                || str_starts_with($key, 'HTTP_')
                || str_starts_with($key, 'REDIRECT_')
                || str_starts_with($key, 'ORIG_')
            ) {
                continue;
            }
            $environment[$key] = $value;
        }
        return $environment;
    }

    /**
     * Fills the superglobals for this request.
     *
     * @return list<string> the upload temporary files created
     */
    public function populate(HttpRequest $request): array
    {
        $order = strtoupper((string) ini_get('variables_order'));
        $_SERVER = $this->server($request);

        $get = [];
        if (str_contains($order, 'G')) {
            parse_str((string) ($_SERVER['QUERY_STRING'] ?? ''), $get);
        }
        $_GET = $get;

        [$post, $files, $uploads] = str_contains($order, 'P') ? $this->body($request) : [[], [], []];
        $_POST = $post;
        $_FILES = $files;

        $cookies = $request->header('Cookie');
        $_COOKIE = $cookies !== [] && str_contains($order, 'C') ? CookieParser::parse(implode('; ', $cookies)) : [];

        $_REQUEST = $this->requestArray($order);
        return $uploads;
    }

    public function reset(): void
    {
        $_GET = [];
        $_POST = [];
        $_COOKIE = [];
        $_FILES = [];
        $_REQUEST = [];
        $_SERVER = $this->environment;
    }

    /** @return array<string, mixed> */
    private function server(HttpRequest $request): array
    {
        if ($request->cgi !== null) {
            return $this->fastCgiServer($request->cgi);
        }
        $server = $this->environment;
        $server['QUERY_STRING'] = $request->query();
        $server['REQUEST_METHOD'] = $request->method;
        // As nginx's fastcgi_params set them: always present, empty
        // when the request has none.
        $server['CONTENT_TYPE'] = implode(', ', $request->header('Content-Type'));
        $server['CONTENT_LENGTH'] = $request->header('Content-Length')[0] ?? '';
        $server['SCRIPT_NAME'] = $this->scriptName;
        $server['REQUEST_URI'] = $request->target;
        $server['DOCUMENT_URI'] = $this->scriptName;
        $server['DOCUMENT_ROOT'] = $this->documentRoot;
        $server['SERVER_PROTOCOL'] = $request->protocol;
        $server['REQUEST_SCHEME'] = $request->https ? 'https' : 'http';
        if ($request->https) {
            $server['HTTPS'] = 'on';
        }
        $server['GATEWAY_INTERFACE'] = 'CGI/1.1';
        $server['SERVER_SOFTWARE'] = 'ppm';
        $server['REMOTE_ADDR'] = $request->remoteAddr;
        $server['REMOTE_PORT'] = $request->remotePort;
        $server['SERVER_ADDR'] = $request->serverAddr;
        $server['SERVER_PORT'] = $request->serverPort;
        $server['SERVER_NAME'] = self::serverName($request);
        $server['SCRIPT_FILENAME'] = $this->documentRoot . $this->scriptName;

        $joined = [];
        foreach ($request->headers as [$name, $value]) {
            $lower = strtolower($name);
            if (str_contains($name, '_')) {
                continue; // underscores: like nginx and Apache, so X_Forwarded_For cannot pose as X-Forwarded-For
            }
            $key = 'HTTP_' . strtoupper(strtr($name, '-', '_'));
            if (isset($joined[$key])) {
                $joined[$key] .= ($lower === 'cookie' ? '; ' : ', ') . $value;
            } else {
                $joined[$key] = $value;
            }
        }
        foreach ($joined as $key => $value) {
            $server[$key] = $value;
        }
        self::authorization($server, $joined['HTTP_AUTHORIZATION'] ?? '');

        $server['PHP_SELF'] = $this->scriptName;
        $now = microtime(true);
        $server['REQUEST_TIME_FLOAT'] = $now;
        $server['REQUEST_TIME'] = (int) $now;
        return $server;
    }

    /**
     * $_SERVER as php-fpm registers it: the environment, then every FastCGI
     * parameter as sent (names with ' ' or '.' get '_', as PHP registers
     * them), then PHP_SELF, PHP_AUTH_* and the request time.
     *
     * @param list<array{0: string, 1: string}> $parameters
     * @return array<string, mixed>
     */
    private function fastCgiServer(array $parameters): array
    {
        $server = $this->environment;
        foreach ($parameters as [$name, $value]) {
            $server[strtr($name, ' .', '__')] = $value;
        }
        $server['PHP_SELF'] = ($server['SCRIPT_NAME'] ?? '') . ($server['PATH_INFO'] ?? '');
        self::authorization($server, (string) ($server['HTTP_AUTHORIZATION'] ?? ''));
        $now = microtime(true);
        $server['REQUEST_TIME_FLOAT'] = $now;
        $server['REQUEST_TIME'] = (int) $now;
        return $server;
    }

    /** @return array{0: array<array-key, mixed>, 1: array<array-key, mixed>, 2: list<string>} */
    private function body(HttpRequest $request): array
    {
        if ($request->method !== 'POST') {
            return [[], [], []]; // PHP parses request bodies for POST only
        }
        $contentType = $request->header('Content-Type')[0] ?? '';
        $mime = strtolower(substr($contentType, 0, strcspn($contentType, ';, ')));
        if ($mime !== 'application/x-www-form-urlencoded' && $mime !== 'multipart/form-data') {
            return [[], [], []];
        }
        $postMax = Ini::bytes('post_max_size');
        if ($postMax > 0 && strlen($request->body) > $postMax) {
            Log::startupWarning(sprintf(
                'PHP Request Startup: POST Content-Length of %d bytes exceeds the limit of %d bytes',
                strlen($request->body),
                $postMax
            ));
            return [[], [], []];
        }
        if ($mime === 'multipart/form-data') {
            return MultipartParser::parse($contentType, $request->body);
        }
        parse_str($request->body, $post);
        return [$post, [], []];
    }

    /** @return array<array-key, mixed> */
    private function requestArray(string $variablesOrder): array
    {
        $order = strtoupper((string) ini_get('request_order'));
        if ($order === '') {
            $order = $variablesOrder;
        }
        $request = [];
        foreach (str_split($order) as $letter) {
            $source = match ($letter) {
                'G' => $_GET,
                'P' => $_POST,
                'C' => $_COOKIE,
                default => null,
            };
            if ($source !== null) {
                $request = array_replace_recursive($request, $source);
            }
        }
        return $request;
    }

    private static function serverName(HttpRequest $request): string
    {
        $host = $request->header('Host')[0] ?? '';
        if ($host === '') {
            return $request->serverAddr;
        }
        if ($host[0] === '[') {
            $end = strpos($host, ']');
            return $end === false ? $host : substr($host, 0, $end + 1);
        }
        $colon = strpos($host, ':');
        return $colon === false ? $host : substr($host, 0, $colon);
    }

    /** @param array<string, mixed> $server */
    private static function authorization(array &$server, string $authorization): void
    {
        if (strncasecmp($authorization, 'Basic ', 6) === 0) {
            $decoded = base64_decode(substr($authorization, 6));
            if ($decoded !== false && str_contains($decoded, ':')) {
                [$user, $password] = explode(':', $decoded, 2);
                $nul = strpos($user, "\0");
                $server['PHP_AUTH_USER'] = $nul === false ? $user : substr($user, 0, $nul);
                $server['PHP_AUTH_PW'] = $password;
                return;
            }
        }
        if (strncasecmp($authorization, 'Digest ', 7) === 0) {
            $server['PHP_AUTH_DIGEST'] = substr($authorization, 7);
        }
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Symfony\Component\HttpFoundation\InputBag;
use Symfony\Component\HttpFoundation\ParameterBag;
use Symfony\Component\HttpFoundation\Request;

/**
 * Builds the framework's request from the superglobals PHP filled, like
 * Request::createFromGlobals() (and Laravel's Request::capture()), but
 * through Request::createRequestFromFactory(), so that
 * Request::setFactory() works in a long-lived worker as it does there.
 * The body is php://input and the uploads are PHP's own, as under PHP-FPM.
 */
final class KernelRequestFactory
{
    /** @var \Closure(array, array, array, array, array): Request */
    private \Closure $fromFactory;

    /**
     * @param class-string<Request>|null $laravelRequest \Illuminate\Http\Request for Laravel kernels
     */
    public function __construct(private ?string $laravelRequest = null)
    {
        // Request::createRequestFromFactory() is private; calling it keeps
        // Request::setFactory() working as it does with createFromGlobals().
        $this->fromFactory = \Closure::bind(
            static fn (array $query, array $post, array $cookies, array $files, array $server): Request
                => Request::createRequestFromFactory($query, $post, [], $cookies, $files, $server),
            null,
            Request::class
        );
    }

    public function create(): Request
    {
        $request = ($this->fromFactory)($_GET, $_POST, $_COOKIE, $_FILES, $_SERVER);
        $method = strtoupper((string) $request->server->get('REQUEST_METHOD', 'GET'));
        if (str_starts_with((string) $request->headers->get('CONTENT_TYPE', ''), 'application/x-www-form-urlencoded')
            && in_array($method, ['PUT', 'DELETE', 'PATCH'], true)
        ) {
            parse_str($request->getContent(), $data);
            $request->request = class_exists(InputBag::class) ? new InputBag($data) : new ParameterBag($data);
        }
        if ($this->laravelRequest !== null) {
            // what Illuminate\Http\Request::capture() does after createFromGlobals()
            $request = ($this->laravelRequest)::createFromBase($request);
        }
        return $request;
    }
}

<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\RequestContext;
use Symfony\Component\HttpFoundation\FileBag;
use Symfony\Component\HttpFoundation\InputBag;
use Symfony\Component\HttpFoundation\ParameterBag;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\File\UploadedFile;

/**
 * Builds the framework's request from the superglobals the worker filled,
 * like Request::createFromGlobals() (and Laravel's Request::capture()),
 * with two differences a long-lived worker needs:
 *
 * - the raw body comes from RequestContext::body(), php://input being empty;
 * - uploaded files are UploadedFile objects in test mode: the worker, not
 *   PHP, wrote their temporary files, so is_uploaded_file() is false for
 *   them and move() would refuse them otherwise. They are exactly the
 *   files of $_FILES, which only the worker fills.
 */
final class KernelRequestFactory
{
    /** @var \Closure(array, array, array, array, array, string): Request */
    private \Closure $fromFactory;

    /**
     * @param class-string<Request>|null $laravelRequest \Illuminate\Http\Request for Laravel kernels
     * @param class-string<UploadedFile> $uploadedFile the class of uploaded file objects
     */
    public function __construct(
        private ?string $laravelRequest = null,
        private string $uploadedFile = UploadedFile::class,
    ) {
        // Request::createRequestFromFactory() is private; calling it keeps
        // Request::setFactory() working as it does with createFromGlobals().
        $this->fromFactory = \Closure::bind(
            static fn (array $query, array $post, array $cookies, array $files, array $server, ?string $content): Request
                => Request::createRequestFromFactory($query, $post, [], $cookies, $files, $server, $content),
            null,
            Request::class
        );
    }

    public function create(): Request
    {
        // Under ppm's own SAPI the request reads php://input itself, and
        // PHP wrote the upload files: no test mode needed.
        $native = RequestContext::native();
        $request = ($this->fromFactory)($_GET, $_POST, $_COOKIE, $_FILES, $_SERVER, $native ? null : RequestContext::body());
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
        $files = $request->files->all();
        if ($files !== [] && !$native) {
            $request->files = new FileBag($this->testModeFiles($files));
        }
        return $request;
    }

    /**
     * @param array<array-key, mixed> $files
     * @return array<array-key, mixed>
     */
    private function testModeFiles(array $files): array
    {
        foreach ($files as $key => $file) {
            if (is_array($file)) {
                $files[$key] = $this->testModeFiles($file);
            } elseif ($file instanceof UploadedFile) {
                $files[$key] = new ($this->uploadedFile)(
                    $file->getPathname(),
                    $file->getClientOriginalName(),
                    $file->getClientMimeType(),
                    $file->getError(),
                    true
                );
            }
        }
        return $files;
    }
}

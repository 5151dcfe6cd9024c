<?php

declare(strict_types=1);

use Symfony\Component\DependencyInjection\Loader\Configurator\ContainerConfigurator;

return static function (ContainerConfigurator $container): void {
    $container->extension('framework', [
        'secret' => '%env(APP_SECRET)%',
        'http_method_override' => false,
        'php_errors' => ['log' => true],
        'router' => ['utf8' => true],
        'trusted_proxies' => '%env(TRUSTED_PROXIES)%',
        'trusted_headers' => ['x-forwarded-for', 'x-forwarded-port', 'x-forwarded-proto'],
        'session' => [
            'storage_factory_id' => 'session.storage.factory.native',
            'handler_id' => 'session.handler.native_file',
            'save_path' => '%kernel.project_dir%/var/sessions/%kernel.environment%',
            'cookie_secure' => 'auto',
            'cookie_samesite' => 'lax',
        ],
    ]);
};

<?php

declare(strict_types=1);

use App\Controller\HomeController;
use Symfony\Component\Routing\Loader\Configurator\RoutingConfigurator;

return static function (RoutingConfigurator $routes): void {
    $routes->add('home', '/')->controller([HomeController::class, 'home'])->methods(['GET', 'HEAD']);
    $routes->add('time', '/api/time')->controller([HomeController::class, 'time'])->methods(['GET', 'HEAD']);
};

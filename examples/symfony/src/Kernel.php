<?php

declare(strict_types=1);

namespace App;

use Symfony\Bundle\FrameworkBundle\Kernel\MicroKernelTrait;
use Symfony\Component\DependencyInjection\Loader\Configurator\ContainerConfigurator;
use Symfony\Component\HttpKernel\Kernel as BaseKernel;

final class Kernel extends BaseKernel
{
    use MicroKernelTrait;

    /** Configuration in PHP: config/packages/*.php, then config/services.php. */
    protected function configureContainer(ContainerConfigurator $container): void
    {
        $config = $this->getProjectDir() . '/config';
        $container->import($config . '/{packages}/*.php');
        $container->import($config . '/{packages}/' . $this->environment . '/*.php');
        $container->import($config . '/services.php');
    }
}
